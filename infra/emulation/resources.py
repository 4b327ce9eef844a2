"""The emulated resources, made from template.yaml itself: the template's
parameter values (overridable from the environment for tests), the job
table, the queues with their dead-letter redrive, the bucket and its
notification, the state machine from its own file with its
DefinitionSubstitutions, the event bus with a capture queue per rule; and
API keys, stored as the product stores them (also for a deployed table:
`infra/api-key`). The emulation and the deployment cannot drift.
"""

import hashlib
import json
import os
import secrets
import time

from sam import ROOT

from .common import BUCKET, EVENT_BUS, STATE_MACHINE, STATES_ROLE, TABLE


def parameter_values(template):
    """Template parameter defaults, overridable from the environment for tests."""
    values = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
    env = {
        "Concurrency": "LOTSAWA_CONCURRENCY",
        "MaxAttempts": "LOTSAWA_MAX_ATTEMPTS",
        "ChunksPerExecution": "LOTSAWA_CHUNKS_PER_EXECUTION",
    }
    for param, var in env.items():
        if os.environ.get(var):
            values[param] = os.environ[var]
    delays = os.environ.get("LOTSAWA_RETRY_DELAYS")
    if delays:
        for i, d in enumerate(delays.split(",")[:3], start=1):
            values[f"RetryDelay{i}"] = d.strip()
    return values


def create_resources(c, template, params):
    res = template["Resources"]
    # DynamoDB: the table schema exactly as declared.
    t = res["JobTable"]["Properties"]
    c["dynamodb"].create_table(
        TableName=TABLE,
        AttributeDefinitions=t["AttributeDefinitions"],
        KeySchema=t["KeySchema"],
        GlobalSecondaryIndexes=t["GlobalSecondaryIndexes"],
        BillingMode=t["BillingMode"],
    )
    ttl = t["TimeToLiveSpecification"]
    c["dynamodb"].update_time_to_live(
        TableName=TABLE,
        TimeToLiveSpecification={"Enabled": ttl["Enabled"], "AttributeName": ttl["AttributeName"]},
    )
    # SQS: dead-letter queues first, then the queues that redrive to them.
    queues = {k: v for k, v in res.items() if v["Type"] == "AWS::SQS::Queue"}
    urls, arns = {}, {}

    def create_queue(name):
        props = queues[name].get("Properties", {})
        attrs = {}
        fifo = bool(props.get("FifoQueue"))
        if fifo:
            attrs["FifoQueue"] = "true"
            attrs["ContentBasedDeduplication"] = str(bool(props.get("ContentBasedDeduplication"))).lower()
        for key in ["VisibilityTimeout", "MessageRetentionPeriod"]:
            if key in props:
                attrs[key] = str(props[key])
        redrive = props.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"]
            target = target[0] if isinstance(target, list) else target.split(".")[0]
            if target not in arns:
                create_queue(target)
            attrs["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arns[target], "maxReceiveCount": redrive["maxReceiveCount"]}
            )
        qname = f"lotsawa-{name}" + (".fifo" if fifo else "")
        url = c["sqs"].create_queue(QueueName=qname, Attributes=attrs)["QueueUrl"]
        urls[name] = url
        arns[name] = c["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    for name in queues:
        if name not in urls:
            create_queue(name)
    # S3: the bucket and its notification to the ingest queue.
    c["s3"].create_bucket(Bucket=BUCKET)
    note = res["TextBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"][0]
    queue_ref = note["Queue"]["Fn::GetAtt"]
    queue_name = queue_ref[0] if isinstance(queue_ref, list) else queue_ref.split(".")[0]
    c["s3"].put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arns[queue_name],
                    "Events": [note["Event"]],
                    "Filter": {"Key": {"FilterRules": note["Filter"]["S3Key"]["Rules"]}},
                }
            ]
        },
    )
    # Step Functions: the same definition file and substitutions.
    sm = res["JobStateMachine"]["Properties"]
    definition = (ROOT / sm["DefinitionUri"]).read_text(encoding="utf-8")
    for key, value in sm["DefinitionSubstitutions"].items():
        ref = value.get("Ref") if isinstance(value, dict) else None
        if ref in urls:
            value = urls[ref]
        elif ref == "AWS::Partition":
            value = "aws"
        elif ref in params:
            value = params[ref]
        definition = definition.replace("${" + key + "}", str(value))
    if "${" in definition:
        raise SystemExit("emulate: unresolved substitution in the state machine definition")
    arn = c["stepfunctions"].create_state_machine(
        name=STATE_MACHINE,
        definition=definition,
        roleArn=STATES_ROLE,
        type=sm.get("Type", "STANDARD"),
    )["stateMachineArn"]
    # EventBridge: the bus and the template's rules, each rule's targets
    # replaced by a capture queue of its own (`events-<rule>`), plus one
    # rule taking every Lotsawa event (`events-all`), for the tests to read.
    c["events"].create_event_bus(Name=EVENT_BUS)
    rules = {k: v["Properties"] for k, v in res.items() if v["Type"] == "AWS::Events::Rule"}
    rules["all"] = {"EventPattern": {"source": ["lotsawa"]}}
    for name, props in rules.items():
        q = c["sqs"].create_queue(QueueName=f"events-{name}")["QueueUrl"]
        q_arn = c["sqs"].get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        c["events"].put_rule(Name=name, EventBusName=EVENT_BUS,
                             EventPattern=json.dumps(props["EventPattern"]), State="ENABLED")
        c["events"].put_targets(Rule=name, EventBusName=EVENT_BUS, Targets=[{"Id": "capture", "Arn": q_arn}])
        urls[f"events-{name}"] = q
    return urls, arns, arn


def put_api_key(c, tenant, table=TABLE):
    """A key for `tenant`, stored as the product stores one (items.rs:
    new_key_item): only its SHA-256 is kept. Returns the key."""
    key_id = secrets.token_hex(6)
    key = f"lts_{key_id}_{secrets.token_hex(32)}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    c["dynamodb"].put_item(TableName=table, Item={
        "pk": {"S": f"KEY#{digest}"},
        "sk": {"S": "KEY"},
        "id": {"S": key_id},
        "tenant": {"S": tenant},
        "createdAt": {"S": created},
        "gsi2pk": {"S": "KEYS"},
        "gsi2sk": {"S": f"{created}#{key_id}"},
    })
    return key


def put_budget(c, tenant, tokens, table=TABLE):
    """Set (`tokens` a whole number) or lift (`None`) `tenant`'s monthly
    token budget, as the product stores it (store/usage.rs: the item
    `TENANT#<tenant>` / `BUDGET`, attribute `monthlyTokens`)."""
    key = {"pk": {"S": f"TENANT#{tenant}"}, "sk": {"S": "BUDGET"}}
    if tokens is None:
        c["dynamodb"].delete_item(TableName=table, Key=key)
    else:
        c["dynamodb"].put_item(TableName=table, Item={**key, "monthlyTokens": {"N": str(int(tokens))}})
