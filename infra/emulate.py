"""The emulated cloud (see infra/emulate): moto + cargo lambda watch + SQS pollers.

Resources come from template.yaml itself (table schema, queues, dead-letter
redrive, the bucket notification, the state machine file and its
DefinitionSubstitutions), so the emulation and the deployment cannot drift.
Only loopback addresses are used.
"""

import hashlib
import json
import os
import re
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sam  # noqa: E402
from sam import ROOT, load_template  # noqa: E402

VENV = Path(os.environ.get("LOTSAWA_VENV", ROOT / ".venv"))
STATE_DIR = Path(os.environ.get("LOTSAWA_EMULATE_DIR", ROOT / ".emulate"))
REGION = "us-east-1"
FUNCTIONS = ["api", "stream", "dispatch", "worker", "ingest", "webhooks", "authorizer"]
ACCOUNT = "123456789012"
# The role Step Functions' own calls (sqs:SendMessage) are made with.
STATES_ROLE = f"arn:aws:iam::{ACCOUNT}:role/lotsawa-JobStateMachineRole"
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


def clients(endpoint, key_id="test", secret="test", token=None):
    kw = dict(
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        aws_session_token=token,
    )
    return {n: boto3.client(n, **kw)
            for n in ["dynamodb", "sqs", "stepfunctions", "s3", "events", "secretsmanager", "iam", "sts"]}


def admin_clients(endpoint):
    """Clients of the emulation's administrator (its key is in the
    environment once IAM is enforced: LOTSAWA_EMULATE_ADMIN=key:secret)."""
    key, _, secret = os.environ.get("LOTSAWA_EMULATE_ADMIN", "test:test").partition(":")
    return clients(endpoint, key, secret)


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


def cpu_limit(binary, memory, pid):
    """Lambda gives a function CPU in proportion to its memory (one vCPU at
    1,769 MB). Where this machine lets us (cgroup v1 cpu controller, as
    root), the function's watch process and its children get that share,
    scaled by LOTSAWA_EMULATE_CPU_SCALE (default 4: the functions run as
    debug builds here, several times slower than the release builds Lambda
    runs; 0 turns the limit off). Returns a note of what was done."""
    scale = float(os.environ.get("LOTSAWA_EMULATE_CPU_SCALE", "4"))
    share = memory / 1769 * scale
    if scale <= 0:
        return f"{binary}: no CPU limit (LOTSAWA_EMULATE_CPU_SCALE=0)"
    base = Path("/sys/fs/cgroup/cpu")
    group = base / f"lotsawa-emulate-{binary}-{os.getpid()}"
    try:
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text(str(max(1000, int(share * 100000))))
        (group / "cgroup.procs").write_text(str(pid))
        return f"{binary}: {memory} MB -> {share:.2f} CPU (cgroup {group.name})"
    except OSError as e:
        return f"{binary}: CPU not limited ({memory} MB would be {share:.2f} CPU): {e.strerror or e}"


def up():
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state_file = STATE_DIR / "state.json"
    if state_file.exists():
        log("already up; stopping the previous emulation first")
        down()
    template = load_template()
    params = parameter_values(template)
    cfn = sam.expand(template)
    fns = {f["binary"]: f for f in sam.functions(cfn).values()}
    for f in FUNCTIONS:
        if f not in fns:
            raise SystemExit(f"emulate: the template has no function built from {f}")
    moto_port = free_port()
    endpoint = f"http://127.0.0.1:{moto_port}"
    base_env = dict(os.environ)
    base_env["PATH"] = f"{VENV / 'bin'}:{base_env.get('PATH', '')}"
    pids, groups = [], []
    state = {"pids": pids, "moto_port": moto_port, "cgroups": groups}

    def save():
        state_file.write_text(json.dumps(state))

    # moto with DynamoDB requests serialized (its transactions are not
    # isolated otherwise, see serve_serialized) and IAM checks by resource.
    moto_env = dict(base_env, MOTO_PORT=str(moto_port), LOTSAWA_EMULATE_IAM="1")
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
    admin = create_admin(c)
    c = clients(endpoint, *admin)
    urls, arns, sm_arn = create_resources(c, template, params)
    log("resources created:", ", ".join(sorted(urls)), "state machine", sm_arn)
    # Keys are required, as in the template: one for the tests' tenant and
    # one for another tenant (isolation cases).
    api_key = put_api_key(c, "emulate")
    other_key = put_api_key(c, "emulate-other")

    # The webhook signing secret, as the template's generated one.
    webhook_secret = secrets.token_hex(24)
    secret_arn = c["secretsmanager"].create_secret(Name="lotsawa-webhook", SecretString=webhook_secret)["ARN"]
    roles, _ = create_roles(c, cfn, params, urls, arns, sm_arn, secret_arn)
    # The one grant the template does not make: state machines the tests
    # create themselves (moto runs every execution with the job state
    # machine's role) send their tasks to queues named lotsawa-test-*.
    c["iam"].put_role_policy(
        RoleName=STATES_ROLE.rsplit("/", 1)[1], PolicyName="EmulationTestQueues",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sqs:SendMessage",
            "Resource": f"arn:aws:sqs:{REGION}:{ACCOUNT}:lotsawa-test-*"}]}))
    enforce_iam(endpoint)
    log("IAM enforced:", ", ".join(sorted(roles)))

    fn_env = dict(base_env)
    fn_env.update({
        "AWS_ENDPOINT_URL": endpoint,
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
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]:
        fn_env.pop(k, None)
    fn_env.setdefault("LOTSAWA_LOG", "info")
    log("building the functions")
    # One build per function, exactly as its `cargo lambda watch --bin` will
    # run it (`cargo run --bin <name>`: the workspace's features, the same
    # build `cargo test --workspace` made; `--package` would select other
    # features and rebuild every dependency), so that the first invocation
    # starts at once.
    for f in FUNCTIONS:
        subprocess.run(["cargo", "build", "--quiet", "--bin", f], cwd=ROOT, env=fn_env, check=True)
    # One `cargo lambda watch` per function: each runs with credentials of
    # its own role (as Lambda gives a function its execution role's), so a
    # call its policies do not allow fails here as on AWS.
    ports = {f: free_port() for f in FUNCTIONS}
    notes = []
    sts = c["sts"]
    for f in FUNCTIONS:
        spec = fns[f]
        creds = sts.assume_role(RoleArn=roles[spec["role"]], RoleSessionName=f,
                                DurationSeconds=43200)["Credentials"]
        env = dict(fn_env, AWS_ACCESS_KEY_ID=creds["AccessKeyId"], AWS_SECRET_ACCESS_KEY=creds["SecretAccessKey"],
                   AWS_SESSION_TOKEN=creds["SessionToken"])
        # The emulator's own debug log (where each invocation went) makes a
        # failed run in CI understandable; the functions log by LOTSAWA_LOG.
        env.setdefault("RUST_LOG", "cargo_lambda_watch=debug")
        if f == "api":
            # As the template: the page's streams go to the stream function's URL.
            env["STREAM_URL"] = f"http://127.0.0.1:{ports['stream']}/lambda-url/stream"
        proc = start(["cargo", "lambda", "watch", "--bin", f, "--ignore-changes", "--timeout", "900",
                      "-A", "127.0.0.1", "-P", str(ports[f])], STATE_DIR / "lambda.log", env)
        pids.append(proc.pid)
        note = cpu_limit(f, spec["memory"], proc.pid)
        if "cgroup" in note and "not limited" not in note:
            groups.append(note.rsplit("cgroup ", 1)[1].rstrip(")"))
        notes.append(note)
        save()
    log("CPU:", "; ".join(notes))
    state["ports"] = ports
    save()
    wait_http(f"http://127.0.0.1:{ports['api']}/lambda-url/api/healthz", 600, "the api function")
    wait_http(f"http://127.0.0.1:{ports['stream']}/lambda-url/stream/healthz", 300, "the stream function")
    for f in ["dispatch", "worker", "ingest", "webhooks"]:
        deadline = time.time() + 300
        while True:
            try:
                invoke(ports[f], f, {"Records": []}, timeout=300)
                break
            except Exception as e:  # noqa: BLE001
                if time.time() > deadline:
                    raise SystemExit(f"emulate: the {f} function did not start: {e}")
                time.sleep(1)
    timeouts = {f: fns[f]["timeout"] for f in FUNCTIONS}
    poll_env = dict(base_env, LOTSAWA_EMULATE_ENDPOINT=endpoint, LOTSAWA_EMULATE_PORTS=json.dumps(ports),
                    LOTSAWA_EMULATE_TIMEOUTS=json.dumps(timeouts), LOTSAWA_EMULATE_QUEUES=json.dumps(urls),
                    LOTSAWA_EMULATE_ADMIN=f"{admin[0]}:{admin[1]}")
    pids.append(start([str(VENV / "bin" / "python"), str(ROOT / "infra" / "emulate.py"), "poll"],
                      STATE_DIR / "poll.log", poll_env).pid)
    # API Gateway: the template's HTTP API (routes, authorizer, limits) in
    # front of the api function.
    gw_port = free_port()
    route_table, authorizers = sam.routes(cfn)
    binaries = {name: f["binary"] for name, f in sam.functions(cfn).items()}
    resolver = sam.Resolver(cfn, params, {}, {})
    for a in authorizers.values():
        a["ttl"] = int(resolver.r(a["ttl"]) or 0)
    gw_env = dict(base_env, LOTSAWA_EMULATE_PORTS=json.dumps(ports), LOTSAWA_EMULATE_TIMEOUTS=json.dumps(timeouts),
                  LOTSAWA_EMULATE_ROUTES=json.dumps({"routes": route_table, "authorizers": authorizers,
                                                      "binaries": binaries}))
    pids.append(start([str(VENV / "bin" / "python"), str(ROOT / "infra" / "emulate.py"), "gateway", str(gw_port)],
                      STATE_DIR / "gateway.log", gw_env).pid)
    save()
    wait_http(f"http://127.0.0.1:{gw_port}/healthz", 60, "the API gateway")
    state.update({
        "endpoint": endpoint,
        "queues": urls,
        "state_machine_arn": sm_arn,
        "table": TABLE,
        "bucket": BUCKET,
        "api_url": f"http://127.0.0.1:{gw_port}",
        "stream_url": f"http://127.0.0.1:{ports['stream']}/lambda-url/stream",
    })
    save()
    print(f"API_URL={state['api_url']}")
    print(f"API_KEY={api_key}")
    print(f"API_KEY_OTHER={other_key}")
    print(f"STREAM_URL={state['stream_url']}")
    print(f"AWS_ENDPOINT_URL={endpoint}")
    print(f"AWS_ACCESS_KEY_ID={admin[0]}")
    print(f"AWS_SECRET_ACCESS_KEY={admin[1]}")
    print(f"STATE_MACHINE_ARN={sm_arn}")
    print(f"JOB_QUEUE_URL={urls['JobQueue']}")
    print(f"INGEST_QUEUE_URL={urls['IngestQueue']}")
    print(f"BUCKET={BUCKET}")
    print(f"WEBHOOK_SECRET={webhook_secret}")
    for f in FUNCTIONS:
        print(f"FUNCTION_PORT_{f.upper()}={ports[f]}")
    for role, arn in roles.items():
        print(f"ROLE_{role}={arn}")
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
    for group in state.get("cgroups", []):
        try:
            (Path("/sys/fs/cgroup/cpu") / group).rmdir()
        except OSError:
            pass
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
    ports = json.loads(os.environ["LOTSAWA_EMULATE_PORTS"])
    timeouts = json.loads(os.environ["LOTSAWA_EMULATE_TIMEOUTS"])
    urls = json.loads(os.environ["LOTSAWA_EMULATE_QUEUES"])
    sqs = admin_clients(endpoint)["sqs"]
    # Each invocation ends at its function's Timeout from the template, as
    # on Lambda (the emulator cannot stop the function's process: the
    # invocation counts as failed and its message is delivered again).
    # LOTSAWA_EMULATE_INVOKE_TIMEOUT shortens it further: an invocation the
    # local emulator loses (its runtime connection broke) would otherwise
    # hold the message for the whole function timeout.
    cap = float(os.environ.get("LOTSAWA_EMULATE_INVOKE_TIMEOUT", "120"))

    def invoke_timeout(function):
        return min(float(timeouts[function]), cap)

    def call(function, event, timeout):
        return invoke(ports[function], function, event, timeout=timeout)

    def arn_of(url):
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def deliver(function, url, arn, message):
        if function == "ingest":
            message = dict(message, Body=as_aws_sends(message.get("Body", "")))
        try:
            result = call(function, {"Records": [sqs_record(message, arn)]}, invoke_timeout(function))
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
        sfn = admin_clients(endpoint)["stepfunctions"]
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
                                call("dispatch", event, invoke_timeout("dispatch"))
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

    if os.environ.get("LOTSAWA_EMULATE_IAM") == "1":
        check_iam_by_resource()
        states_call_as_their_role()
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    run_simple("127.0.0.1", port, serialized, threaded=True, request_handler=MotoRequestHandler)


# API Gateway's own answers (HTTP API), before or instead of a function's.
GW_NOT_FOUND = (404, {"message": "Not Found"})
GW_UNAUTHORIZED = (401, {"message": "Unauthorized"})
GW_FORBIDDEN = (403, {"message": "Forbidden"})
GW_TOO_LARGE = (413, {"message": "Request Entity Too Large"})
GW_ERROR = (500, {"message": "Internal Server Error"})
GW_UNAVAILABLE = (503, {"message": "Service Unavailable"})
# An HTTP API's integration ends at 30 s; a request body is at most 10 MB;
# a synchronous Lambda invocation's event and answer at most 6 MB.
GW_TIMEOUT = 30
GW_BODY_LIMIT = 10 * 1024 * 1024
LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024


def route_regex(path):
    """An HTTP API route path as a regular expression: `{name}` is one
    segment, `{name+}` (last) one or more."""
    out = ""
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{") and part.endswith("+}"):
            out += f"(?P<{part[1:-2]}>.+)"
        elif part.startswith("{"):
            out += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            out += re.escape(part)
    return re.compile(out + "$")


def match_route(routes, method, path):
    """The route API Gateway picks: an exact path before one with
    variables before a greedy one, a route for the method before ANY.
    None when no route matches (API Gateway answers 404 itself)."""
    best = None
    for r in routes:
        if r["method"] not in (method, "ANY"):
            continue
        m = route_regex(r["path"]).match(path)
        if not m:
            continue
        greedy = "+}" in r["path"]
        variables = r["path"].count("{")
        score = (not greedy, -variables, len(r["path"]), r["method"] == method)
        if best is None or score > best[0]:
            best = (score, r, {k.rstrip("+"): v for k, v in m.groupdict().items()})
    return (best[1], best[2]) if best else (None, None)


TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
              "application/x-www-form-urlencoded", "application/problem+json")


def gateway(port):
    """The template's HTTP API in front of its functions: the route table,
    the authorizer (identity source required, simple responses, answers
    cached for the template's TTL), payload format 2.0 events, binary
    bodies base64-encoded, the 10 MB request and 6 MB invocation limits and
    the 30 s integration timeout. Responses are buffered, as an HTTP API's
    are."""
    import base64
    import uuid
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qsl

    ports = json.loads(os.environ["LOTSAWA_EMULATE_PORTS"])
    timeouts = json.loads(os.environ["LOTSAWA_EMULATE_TIMEOUTS"])
    spec = json.loads(os.environ["LOTSAWA_EMULATE_ROUTES"])
    routes, authorizers, binaries = spec["routes"], spec["authorizers"], spec["binaries"]
    cache, cache_lock = {}, threading.Lock()

    def call(function, event):
        binary = binaries[function]
        data = json.dumps(event).encode()
        if len(data) > LAMBDA_PAYLOAD_LIMIT:
            return "too large", None
        timeout = min(GW_TIMEOUT, float(timeouts[binary]))
        req = urllib.request.Request(
            f"http://127.0.0.1:{ports[binary]}/2015-03-31/functions/{binary}/invocations",
            data=data, headers={"content-type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
        except TimeoutError:
            return "timeout", None
        except urllib.error.HTTPError as e:
            log(f"gateway: {binary} answered {e.code}")
            return "error", None
        except Exception as e:  # noqa: BLE001 - connection lost: an integration failure
            if "timed out" in str(e):
                return "timeout", None
            log(f"gateway: {binary} failed: {e}")
            return "error", None
        if len(body) > LAMBDA_PAYLOAD_LIMIT:
            return "error", None
        try:
            result = json.loads(body or b"null")
        except ValueError:
            return "error", None
        if isinstance(result, dict) and result.get("errorType"):
            log(f"gateway: {binary} raised {result.get('errorType')}: {result.get('errorMessage')}")
            return "error", None
        return "ok", result

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def answer(self, status, body, headers=None, cookies=()):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            sent = set()
            for k, v in (headers or {}).items():
                if k.lower() in ("content-length", "transfer-encoding", "connection"):
                    continue
                self.send_header(k, v)
                sent.add(k.lower())
            if "content-type" not in sent and not isinstance(body, bytes):
                self.send_header("content-type", "application/json")
            for c in cookies:
                self.send_header("set-cookie", c)
            self.send_header("apigw-requestid", uuid.uuid4().hex[:16])
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def handle_any(self):
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                # Not read here: refuse it and close, so its bytes are never
                # taken for the next request.
                self.close_connection = True
                return self.answer(411, {"message": "Length Required"})
            length = int(self.headers.get("content-length") or 0)
            if length > GW_BODY_LIMIT:
                self.close_connection = True
                return self.answer(*GW_TOO_LARGE)
            raw = self.rfile.read(length) if length else b""
            path, _, query = self.path.partition("?")
            route, params = match_route(routes, self.command, path)
            if route is None:
                return self.answer(*GW_NOT_FOUND)
            headers = {}
            for k, v in self.headers.items():
                k = k.lower()
                headers[k] = f"{headers[k]},{v}" if k in headers else v
            cookies = [c.strip() for c in headers.pop("cookie", "").split(";") if c.strip()]
            qs = {}
            for k, v in parse_qsl(query, keep_blank_values=True):
                qs[k] = f"{qs[k]},{v}" if k in qs else v
            route_key = f"{route['method']} {route['path']}"
            now = time.time()
            context = {
                "accountId": ACCOUNT, "apiId": "emulated", "domainName": headers.get("host", "127.0.0.1"),
                "domainPrefix": "emulated", "requestId": uuid.uuid4().hex, "routeKey": route_key,
                "stage": "$default", "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
                "http": {"method": self.command, "path": path, "protocol": "HTTP/1.1",
                         "sourceIp": self.client_address[0], "userAgent": headers.get("user-agent", "")},
            }
            base = {"version": "2.0", "routeKey": route_key, "rawPath": path, "rawQueryString": query,
                    "headers": headers, "requestContext": context}
            if cookies:
                base["cookies"] = cookies
            if qs:
                base["queryStringParameters"] = qs
            if params:
                base["pathParameters"] = params
            if route["authorizer"]:
                a = authorizers[route["authorizer"]]
                identity = [headers.get(h) for h in a["identity"]]
                if any(not v for v in identity):
                    return self.answer(*GW_UNAUTHORIZED)
                key = (route["authorizer"], tuple(identity))
                with cache_lock:
                    hit = cache.get(key)
                if hit and hit[0] > now:
                    allowed, auth_context = hit[1], hit[2]
                else:
                    event = dict(base, type="REQUEST", identitySource=identity,
                                 routeArn=f"arn:aws:execute-api:{REGION}:{ACCOUNT}:emulated/$default/"
                                          f"{self.command}{path}")
                    outcome, result = call(a["function"], event)
                    if outcome != "ok" or not isinstance(result, dict):
                        return self.answer(*GW_ERROR)
                    allowed, auth_context = bool(result.get("isAuthorized")), result.get("context") or {}
                    if a["ttl"] > 0:
                        with cache_lock:
                            cache[key] = (now + a["ttl"], allowed, auth_context)
                if not allowed:
                    return self.answer(*GW_FORBIDDEN)
                context["authorizer"] = {"lambda": auth_context}
            ctype = headers.get("content-type", "")
            if raw and not ctype.lower().startswith(TEXT_TYPES):
                body, encoded = base64.b64encode(raw).decode(), True
            else:
                try:
                    body, encoded = raw.decode("utf-8"), False
                except UnicodeDecodeError:
                    body, encoded = base64.b64encode(raw).decode(), True
            event = dict(base, body=body if raw else None, isBase64Encoded=encoded)
            outcome, result = call(route["function"], event)
            if outcome == "too large":
                return self.answer(*GW_TOO_LARGE)
            if outcome == "timeout":
                return self.answer(*GW_UNAVAILABLE)
            if outcome != "ok":
                return self.answer(*GW_ERROR)
            if not isinstance(result, dict) or "statusCode" not in result:
                # Payload 2.0 without a status: the answer is the body.
                return self.answer(200, json.dumps(result).encode(), {"content-type": "application/json"})
            out = result.get("body") or ""
            out = base64.b64decode(out) if result.get("isBase64Encoded") else out.encode()
            return self.answer(int(result["statusCode"]), out, result.get("headers") or {},
                               result.get("cookies") or ())

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    log(f"gateway on {port}: {len(routes)} routes")
    server.serve_forever()


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
    elif command == "api-key":
        # The first key of a deployed stack (infra/README.md): the table
        # named by the stack's output, the caller's own AWS credentials.
        if len(sys.argv) != 4:
            raise SystemExit("usage: infra/api-key TABLE TENANT")
        print(put_api_key({"dynamodb": boto3.client("dynamodb")}, sys.argv[3], table=sys.argv[2]))
    elif command == "gateway":
        gateway(int(sys.argv[2]))
    elif command == "moto-serialized":
        serve_serialized(int(sys.argv[2]))
    elif command == "store":
        store(int(sys.argv[2]) if len(sys.argv) > 2 else 32)
    else:
        raise SystemExit("usage: infra/emulate up|down|store [tables]")
