"""IAM in the emulation, as AWS enforces it: the administrator the tests
and the emulation act as, every role of the expanded template with its
policies resolved against the emulated resources, switching moto's checks
on, and the patches (applied inside the moto server) without which moto
would check too little or refuse its own Step Functions calls.
"""

import json
import threading
import urllib.request

import boto3

import sam

from .common import ACCOUNT, BUCKET, EVENT_BUS, REGION, STATES_ROLE, TABLE


def create_admin(c):
    """The emulation's administrator (allowed everything): the tests and
    the emulation itself act as it once IAM is enforced."""
    iam = c["iam"]
    iam.create_user(UserName="lotsawa-admin")
    iam.put_user_policy(UserName="lotsawa-admin", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    k = iam.create_access_key(UserName="lotsawa-admin")["AccessKey"]
    return k["AccessKeyId"], k["SecretAccessKey"]


def create_roles(c, cfn, params, urls, arns, sm_arn, secret_arn):
    """Every role the expanded template makes, with its policies resolved
    against the emulated resources; {role logical id: role ARN}."""
    refs = {"JobTable": TABLE, "TextBucket": BUCKET, "EventBus": EVENT_BUS, "JobStateMachine": sm_arn,
            "WebhookSecret": secret_arn, "AWS::StackName": "lotsawa"}
    atts = {}
    for logical, arn in arns.items():
        refs[logical] = urls[logical]
        atts[(logical, "Arn")] = arn
        atts[(logical, "QueueName")] = arn.rsplit(":", 1)[1]
    policies = sam.role_policies(cfn, sam.Resolver(cfn, params, refs, atts))
    # Lambda and Step Functions assume these roles on AWS; here the
    # administrator assumes them for each function (moto compares an AWS
    # principal with the caller's ARN literally: "*" lets it).
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"AWS": "*", "Service": ["lambda.amazonaws.com", "states.amazonaws.com"]}}]})
    roles = {}
    for role, docs in policies.items():
        name = f"lotsawa-{role}"
        roles[role] = c["iam"].create_role(RoleName=name, AssumeRolePolicyDocument=trust,
                                           MaxSessionDuration=43200)["Role"]["Arn"]
        for pname, doc in docs.items():
            c["iam"].put_role_policy(RoleName=name, PolicyName=pname, PolicyDocument=json.dumps(doc))
    return roles, policies


def enforce_iam(endpoint):
    """From here on moto checks every call's credentials and policies."""
    urllib.request.urlopen(urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"},
        method="POST"), timeout=10).read()


def _request_params(handler):
    params = getattr(handler, "params", None)
    if isinstance(params, dict) and params:
        return params
    body = getattr(handler, "body", None)
    if isinstance(body, dict):
        return body
    try:
        return json.loads(body or "{}")
    except (TypeError, ValueError):
        return {}


def check_iam_by_resource():
    """moto (5.2.5) checks DynamoDB, Step Functions, EventBridge and Secrets
    Manager calls against the resource "*" only, so a policy that names a
    table, a state machine, a bus or a secret (what SAM's policy templates
    write) would allow nothing: those handlers get the resource each call
    acts on, as IAM sees it."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.events.responses import EventsHandler
    from moto.secretsmanager.responses import SecretsManagerResponse
    from moto.stepfunctions.responses import StepFunctionResponse

    def table(self):
        b = _request_params(self)
        name = b.get("TableName")
        if not name:  # batches and transactions: the table they name (Lotsawa has one)
            name = next(iter(b.get("RequestItems") or {}), None)
            for t in b.get("TransactItems") or []:
                for op in t.values():
                    name = name or op.get("TableName")
        if not name:
            return "*"
        arn = name if name.startswith("arn:") else f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{name}"
        if b.get("IndexName"):
            arn += f"/index/{b['IndexName']}"
        return arn

    def state_machine(self):
        b = _request_params(self)
        return b.get("executionArn") or b.get("stateMachineArn") or "*"

    def bus(self):
        b = _request_params(self)
        name = b.get("EventBusName") or b.get("Name")
        if b.get("Entries"):
            name = b["Entries"][0].get("EventBusName")
        name = name or "default"
        return name if name.startswith("arn:") else \
            f"arn:aws:events:{self.region}:{self.current_account}:event-bus/{name}"

    def secret(self):
        from moto.secretsmanager.models import secretsmanager_backends
        sid = _request_params(self).get("SecretId")
        if not sid:
            return "*"
        try:
            return secretsmanager_backends[self.current_account][self.region].describe_secret(sid).arn
        except Exception:  # noqa: BLE001 - an unknown secret: the action reports it
            return "*"

    DynamoHandler._determine_resource = table
    StepFunctionResponse._determine_resource = state_machine
    EventsHandler._determine_resource = bus
    SecretsManagerResponse._determine_resource = secret


def states_call_as_their_role():
    """moto's Step Functions make their service calls (sqs:SendMessage)
    over HTTP with a fixed key that IAM does not know: they make them with
    credentials of the state machine's role instead, as on AWS."""
    from moto.stepfunctions.parser.asl.utils import boto_client
    from moto.sts.models import sts_backends

    lock, cache = threading.Lock(), {}

    class RoleBoto3:
        @staticmethod
        def client(**kw):
            with lock:
                backend = sts_backends[ACCOUNT]["aws"]
                if "creds" in cache and backend.get_assumed_role_from_access_key(cache["creds"][0]) is None:
                    del cache["creds"]
                if "creds" not in cache:
                    r = backend.assume_role(region_name=kw.get("region_name", REGION), role_session_name="states",
                                            role_arn=STATES_ROLE, policy="", duration=43200, external_id="")
                    cache["creds"] = (r.access_key_id, r.secret_access_key, r.session_token)
                key, secret, token = cache["creds"]
            kw.update(aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token)
            return boto3.client(**kw)

    boto_client.boto3 = RoleBoto3
