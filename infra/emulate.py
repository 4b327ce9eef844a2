"""The emulated cloud (see infra/emulate): moto + cargo lambda watch + SQS pollers.

Resources come from template.yaml itself (table schema, queues, dead-letter
redrive, the bucket notification, the state machine file and its
DefinitionSubstitutions), so the emulation and the deployment cannot drift.
Only loopback addresses are used.
"""

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("LOTSAWA_VENV", ROOT / ".venv"))
STATE_DIR = Path(os.environ.get("LOTSAWA_EMULATE_DIR", ROOT / ".emulate"))
REGION = "us-east-1"
FUNCTIONS = ["api", "stream", "dispatch", "worker", "ingest", "webhooks"]
TABLE = "lotsawa-jobs"
BUCKET = "lotsawa-texts"
STATE_MACHINE = "lotsawa-jobs"
EVENT_BUS = "lotsawa-events"


def log(*args):
    print("emulate:", *args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation tags (!Ref, !GetAtt, ...) as dicts."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    name = "Ref" if suffix == "Ref" else "Fn::" + suffix
    return {name: value}


CfnLoader.add_multi_constructor("!", _tag)


def load_template():
    with open(ROOT / "template.yaml", encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)


def clients(endpoint):
    kw = dict(
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    return {n: boto3.client(n, **kw) for n in ["dynamodb", "sqs", "stepfunctions", "s3", "events", "secretsmanager"]}


def wait_http(url, timeout, what):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            # One patient request: repeated ones would queue behind a cold start.
            with urllib.request.urlopen(url, timeout=max(5, deadline - time.time())) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
            last = e
        except Exception as e:  # noqa: BLE001 - any failure means not ready yet
            last = e
        time.sleep(0.5)
    raise SystemExit(f"emulate: {what} did not become ready in {timeout}s: {last}")


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
        roleArn="arn:aws:iam::123456789012:role/lotsawa-states",
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


def start(cmd, log_file, env):
    out = open(log_file, "ab")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def invoke(port, function, event, timeout=960):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/2015-03-31/functions/{function}/invocations",
        data=json.dumps(event).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read().decode() or "{}"
    result = json.loads(body)
    if isinstance(result, dict) and result.get("errorType"):
        raise RuntimeError(f"{function} failed: {result}")
    return result


def put_api_key(c, tenant):
    """A key for `tenant`, stored as the product stores one (items.rs:
    new_key_item): only its SHA-256 is kept. Returns the key."""
    key_id = secrets.token_hex(6)
    key = f"lts_{key_id}_{secrets.token_hex(32)}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    c["dynamodb"].put_item(TableName=TABLE, Item={
        "pk": {"S": f"KEY#{digest}"},
        "sk": {"S": "KEY"},
        "id": {"S": key_id},
        "tenant": {"S": tenant},
        "createdAt": {"S": created},
        "gsi2pk": {"S": "KEYS"},
        "gsi2sk": {"S": f"{created}#{key_id}"},
    })
    return key


def up():
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state_file = STATE_DIR / "state.json"
    if state_file.exists():
        log("already up; stopping the previous emulation first")
        down()
    template = load_template()
    params = parameter_values(template)
    moto_port, lambda_port = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{moto_port}"
    base_env = dict(os.environ)
    base_env["PATH"] = f"{VENV / 'bin'}:{base_env.get('PATH', '')}"
    pids = []
    state = {"pids": pids, "moto_port": moto_port, "lambda_port": lambda_port}

    def save():
        state_file.write_text(json.dumps(state))

    moto_env = dict(base_env, MOTO_PORT=str(moto_port))
    # moto with DynamoDB requests serialized: its transactions are not
    # isolated otherwise (see serve_serialized).
    pids.append(start([str(VENV / "bin" / "python"), str(ROOT / "infra" / "emulate.py"), "moto-serialized",
                       str(moto_port)], STATE_DIR / "moto.log", moto_env).pid)
    save()
    wait_http(f"{endpoint}/moto-api/", 60, "moto")
    # Step Functions must execute for real; switched on before any resource exists.
    urllib.request.urlopen(urllib.request.Request(
        f"{endpoint}/moto-api/config",
        data=json.dumps({"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}).encode(),
        method="POST"), timeout=10).read()
    c = clients(endpoint)
    urls, arns, sm_arn = create_resources(c, template, params)
    log("resources created:", ", ".join(sorted(urls)), "state machine", sm_arn)
    # Keys are required, as in the template: one for the tests' tenant and
    # one for another tenant (isolation cases).
    api_key = put_api_key(c, "emulate")
    other_key = put_api_key(c, "emulate-other")

    # The webhook signing secret, as the template's generated one.
    webhook_secret = secrets.token_hex(24)
    secret_arn = c["secretsmanager"].create_secret(Name="lotsawa-webhook", SecretString=webhook_secret)["ARN"]

    fn_env = dict(base_env)
    fn_env.update({
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "LOTSAWA_TABLE": TABLE,
        "LOTSAWA_JOB_QUEUE_URL": urls["JobQueue"],
        "LOTSAWA_STATE_MACHINE_ARN": sm_arn,
        "LOTSAWA_BUCKET": BUCKET,
        "LOTSAWA_CONCURRENCY": params["Concurrency"],
        # As the template's Globals: keys required; uploads are the tests' tenant's.
        "LOTSAWA_REQUIRE_AUTH": "1",
        "LOTSAWA_INGEST_TENANT": "emulate",
        "LOTSAWA_EVENT_BUS": EVENT_BUS,
        "LOTSAWA_WEBHOOK_QUEUE_URL": urls["WebhookQueue"],
        "LOTSAWA_WEBHOOK_SECRET_ARN": secret_arn,
        # The accommodations only the local emulators need (see infra/README.md).
        "LOTSAWA_EMULATOR": "1",
    })
    fn_env.setdefault("LOTSAWA_LOG", "info")
    log("building the functions")
    # One build per binary, exactly as `cargo lambda watch` will run it
    # (`cargo run --bin <name>`), so that the first invocation starts at once.
    for f in FUNCTIONS:
        subprocess.run(["cargo", "build", "--quiet", "--bin", f], cwd=ROOT, env=fn_env, check=True)
    # The emulator's own debug log (where each invocation went) makes a
    # failed run in CI understandable; the functions log by LOTSAWA_LOG.
    watch_env = dict(fn_env)
    watch_env.setdefault("RUST_LOG", "cargo_lambda_watch=debug")
    pids.append(start(["cargo", "lambda", "watch", "--ignore-changes", "--timeout", "900", "-A", "127.0.0.1", "-P", str(lambda_port)],
                      STATE_DIR / "lambda.log", watch_env).pid)
    save()
    base = f"http://127.0.0.1:{lambda_port}"
    wait_http(f"{base}/lambda-url/api/healthz", 600, "the api function")
    wait_http(f"{base}/lambda-url/stream/healthz", 300, "the stream function")
    for f in ["dispatch", "worker", "ingest", "webhooks"]:
        deadline = time.time() + 300
        while True:
            try:
                invoke(lambda_port, f, {"Records": []}, timeout=300)
                break
            except Exception as e:  # noqa: BLE001
                if time.time() > deadline:
                    raise SystemExit(f"emulate: the {f} function did not start: {e}")
                time.sleep(1)
    poll_env = dict(base_env, LOTSAWA_EMULATE_ENDPOINT=endpoint, LOTSAWA_EMULATE_LAMBDA_PORT=str(lambda_port),
                    LOTSAWA_EMULATE_QUEUES=json.dumps(urls))
    pids.append(start([str(VENV / "bin" / "python"), str(ROOT / "infra" / "emulate.py"), "poll"],
                      STATE_DIR / "poll.log", poll_env).pid)
    state.update({
        "endpoint": endpoint,
        "queues": urls,
        "state_machine_arn": sm_arn,
        "table": TABLE,
        "bucket": BUCKET,
        "api_url": f"{base}/lambda-url/api",
        "stream_url": f"{base}/lambda-url/stream",
    })
    save()
    print(f"API_URL={state['api_url']}")
    print(f"API_KEY={api_key}")
    print(f"API_KEY_OTHER={other_key}")
    print(f"STREAM_URL={state['stream_url']}")
    print(f"AWS_ENDPOINT_URL={endpoint}")
    print(f"STATE_MACHINE_ARN={sm_arn}")
    print(f"JOB_QUEUE_URL={urls['JobQueue']}")
    print(f"INGEST_QUEUE_URL={urls['IngestQueue']}")
    print(f"BUCKET={BUCKET}")
    print(f"WEBHOOK_SECRET={webhook_secret}")
    for name, url in urls.items():
        if name.startswith("events-"):
            print(f"EVENTS_QUEUE_{name[len('events-'):].upper()}={url}")
    sys.stdout.flush()


def down():
    state_file = STATE_DIR / "state.json"
    if not state_file.exists():
        log("nothing to stop")
        return
    state = json.loads(state_file.read_text())
    for pid in reversed(state.get("pids", [])):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.1)
    state_file.unlink()
    log("stopped")


def as_aws_sends(body):
    """moto's S3 notification records lack fields AWS always sends
    (userIdentity, requestParameters, responseElements); add them, so the
    ingest function parses exactly what it gets on AWS."""
    try:
        event = json.loads(body)
    except ValueError:
        return body
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        return body
    for r in records:
        if isinstance(r, dict):
            r.setdefault("userIdentity", {"principalId": "AWS:EMULATED"})
            r.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
            r.setdefault("responseElements", {})
    return json.dumps(event)


def sqs_record(message, arn):
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": REGION,
    }


def poll():
    """Event-source mappings: SQS → function, as Lambda would do on AWS."""
    endpoint = os.environ["LOTSAWA_EMULATE_ENDPOINT"]
    port = int(os.environ["LOTSAWA_EMULATE_LAMBDA_PORT"])
    urls = json.loads(os.environ["LOTSAWA_EMULATE_QUEUES"])
    sqs = clients(endpoint)["sqs"]
    # Lambda's timeout, shortened: an invocation the local emulator loses
    # (its runtime connection broke) would otherwise hold the message for
    # the whole function timeout. A message whose invocation runs longer is
    # delivered again, which SQS allows and the handlers tolerate.
    invoke_timeout = float(os.environ.get("LOTSAWA_EMULATE_INVOKE_TIMEOUT", "120"))

    def arn_of(url):
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def deliver(function, url, arn, message):
        if function == "ingest":
            message = dict(message, Body=as_aws_sends(message.get("Body", "")))
        try:
            result = invoke(port, function, {"Records": [sqs_record(message, arn)]}, timeout=invoke_timeout)
            failed = {f.get("itemIdentifier") for f in (result or {}).get("batchItemFailures", [])}
        except Exception as e:  # noqa: BLE001 - the message goes back to the queue
            log(f"{function} invocation failed: {e}")
            failed = {message["MessageId"]}
        if message["MessageId"] in failed:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=1)
        else:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def loop(function, queue, parallel):
        url = urls[queue]
        arn = arn_of(url)
        pool = ThreadPoolExecutor(max_workers=parallel)
        while True:
            try:
                got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1 if parallel == 1 else 10,
                                          WaitTimeSeconds=1, AttributeNames=["All"]).get("Messages", [])
            except Exception as e:  # noqa: BLE001
                log(f"receive from {queue} failed: {e}")
                time.sleep(1)
                continue
            if parallel == 1:
                for m in got:
                    deliver(function, url, arn, m)
            else:
                for m in got:
                    pool.submit(deliver, function, url, arn, m)

    def execution_events():
        # The template's EventBridge rule sends one event per ended execution
        # of the job state machine, about a second after it ends, once. moto
        # has no EventBridge rule: list the executions and send each ended
        # one's event once. An execution is announced when it has shown the
        # same ended status for 2 s (moto has been seen reporting a passing
        # error state before its Catch ran).
        sfn = boto3.client("stepfunctions", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id="test", aws_secret_access_key="test")
        announced, seen = set(), {}
        while True:
            time.sleep(1)
            try:
                machines = sfn.list_state_machines()["stateMachines"]
                for m in machines:
                    if m["name"] != STATE_MACHINE:
                        continue
                    pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=m["stateMachineArn"])
                    for page in pages:
                        for e in page["executions"]:
                            arn, status = e["executionArn"], e["status"]
                            if arn in announced or status == "RUNNING":
                                seen.pop(arn, None)
                                continue
                            first = seen.get(arn)
                            if first is None or first[0] != status:
                                seen[arn] = (status, time.time())
                                continue
                            if time.time() - first[1] < 2:
                                continue
                            event = {"version": "0", "id": arn, "source": "aws.states",
                                     "detail-type": "Step Functions Execution Status Change",
                                     "account": "123456789012", "region": REGION,
                                     "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "resources": [arn],
                                     "detail": {"executionArn": arn, "stateMachineArn": m["stateMachineArn"],
                                                "name": e["name"], "status": status}}
                            announced.add(arn)
                            seen.pop(arn, None)
                            try:
                                invoke(port, "dispatch", event, timeout=60)
                            except Exception as err:  # noqa: BLE001 - EventBridge would retry; so do we
                                announced.discard(arn)
                                log(f"execution-status event failed: {err}")
            except Exception as e:  # noqa: BLE001
                log(f"listing executions failed: {e}")

    threads = [
        threading.Thread(target=execution_events, daemon=True),
        threading.Thread(target=loop, args=("dispatch", "JobQueue", 1), daemon=True),
        threading.Thread(target=loop, args=("worker", "WorkerQueue", 16), daemon=True),
        threading.Thread(target=loop, args=("ingest", "IngestQueue", 1), daemon=True),
        threading.Thread(target=loop, args=("webhooks", "WebhookQueue", 4), daemon=True),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def serve_serialized(port):
    """moto_server with one DynamoDB request at a time. DynamoDB runs
    transactions serializably (a concurrent transaction on the same item is
    cancelled) and a read never sees half of one; moto checks a
    transaction's conditions and writes its items without a lock, so two
    concurrent transactions on the semaphore item can both pass its
    condition, and a read can see a transaction half written. Serializing
    DynamoDB requests restores the isolation AWS gives. Other services are
    served concurrently, as before: an SQS long poll holds no lock, and Step
    Functions executions (moto runs them in threads that call this server
    over HTTP) never wait for one."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    run_simple("127.0.0.1", port, serialized, threaded=True, request_handler=MotoRequestHandler)


def store(count):
    """moto alone, with `count` job tables (the template's schema) and the
    text bucket, for the store conformance suite: prints AWS_ENDPOINT_URL=,
    TABLE_PREFIX=, BUCKET= and READY, then serves until its standard input
    closes (the test process ended), and stops moto."""
    template = load_template()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ, MOTO_PORT=str(port))
    log_file = Path(os.environ.get("LOTSAWA_EMULATE_LOG", os.devnull))
    moto = start([str(VENV / "bin" / "python"), str(ROOT / "infra" / "emulate.py"), "moto-serialized", str(port)],
                 log_file, env)
    try:
        wait_http(f"{endpoint}/moto-api/", 60, "moto")
        c = clients(endpoint)
        t = template["Resources"]["JobTable"]["Properties"]
        prefix = "lotsawa-conformance-"
        for i in range(count):
            c["dynamodb"].create_table(
                TableName=f"{prefix}{i}",
                AttributeDefinitions=t["AttributeDefinitions"],
                KeySchema=t["KeySchema"],
                GlobalSecondaryIndexes=t["GlobalSecondaryIndexes"],
                BillingMode=t["BillingMode"],
            )
        c["s3"].create_bucket(Bucket=BUCKET)
        print(f"AWS_ENDPOINT_URL={endpoint}")
        print(f"TABLE_PREFIX={prefix}")
        print(f"TABLES={count}")
        print(f"BUCKET={BUCKET}")
        print("READY")
        sys.stdout.flush()
        sys.stdin.read()
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(moto.pid, sig)
            except ProcessLookupError:
                break
            try:
                moto.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "up":
        up()
    elif command == "down":
        down()
    elif command == "poll":
        poll()
    elif command == "moto-serialized":
        serve_serialized(int(sys.argv[2]))
    elif command == "store":
        store(int(sys.argv[2]) if len(sys.argv) > 2 else 32)
    else:
        raise SystemExit("usage: infra/emulate up|down|store [tables]")
