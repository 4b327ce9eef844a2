"""`infra/emulate up` and `down`: the order the emulated cloud starts in
(moto, the administrator, the template's resources and API keys, the
webhook secret and roles, IAM switched on, the functions, the SQS pollers,
the API gateway), the state file naming every process it started, the
KEY=value lines the tests read, and stopping all of it again.
"""

import json
import os
import secrets
import signal
import sys
import time
import urllib.request

import sam

from . import cpu, gateway, iam, lambdas, resources
from .common import (
    ACCOUNT,
    BUCKET,
    FUNCTIONS,
    REGION,
    STATE_DIR,
    STATES_ROLE,
    TABLE,
    VENV,
    clients,
    free_port,
    log,
    start,
    subcommand,
    wait_http,
)


def up():
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state_file = STATE_DIR / "state.json"
    if state_file.exists():
        log("already up; stopping the previous emulation first")
        down()
    template = sam.load_template()
    params = resources.parameter_values(template)
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
    # isolated otherwise, see moto_server.serve_serialized) and IAM checks by resource.
    moto_env = dict(base_env, MOTO_PORT=str(moto_port), LOTSAWA_EMULATE_IAM="1")
    pids.append(start(subcommand("moto-serialized", str(moto_port)), STATE_DIR / "moto.log", moto_env).pid)
    save()
    wait_http(f"{endpoint}/moto-api/", 60, "moto")
    # Step Functions must execute for real; switched on before any resource exists.
    urllib.request.urlopen(urllib.request.Request(
        f"{endpoint}/moto-api/config",
        data=json.dumps({"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}).encode(),
        method="POST"), timeout=10).read()
    c = clients(endpoint)
    admin = iam.create_admin(c)
    c = clients(endpoint, *admin)
    urls, arns, sm_arn = resources.create_resources(c, template, params)
    log("resources created:", ", ".join(sorted(urls)), "state machine", sm_arn)
    # Keys are required, as in the template: one for the tests' tenant and
    # one for another tenant (isolation cases).
    api_key = resources.put_api_key(c, "emulate")
    other_key = resources.put_api_key(c, "emulate-other")

    # The webhook signing secret, as the template's generated one.
    webhook_secret = secrets.token_hex(24)
    secret_arn = c["secretsmanager"].create_secret(Name="lotsawa-webhook", SecretString=webhook_secret)["ARN"]
    roles, _ = iam.create_roles(c, cfn, params, urls, arns, sm_arn, secret_arn)
    # The one grant the template does not make: state machines the tests
    # create themselves (moto runs every execution with the job state
    # machine's role) send their tasks to queues named lotsawa-test-*.
    c["iam"].put_role_policy(
        RoleName=STATES_ROLE.rsplit("/", 1)[1], PolicyName="EmulationTestQueues",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sqs:SendMessage",
            "Resource": f"arn:aws:sqs:{REGION}:{ACCOUNT}:lotsawa-test-*"}]}))
    iam.enforce_iam(endpoint)
    log("IAM enforced:", ", ".join(sorted(roles)))

    fn_env = lambdas.function_env(base_env, endpoint, urls, sm_arn, params, secret_arn)
    lambdas.build(fn_env)

    def started(pid, group):
        pids.append(pid)
        if group:
            groups.append(group)
        save()

    ports = lambdas.start_watches(fns, roles, c["sts"], fn_env, started)
    state["ports"] = ports
    save()
    lambdas.wait_started(ports)
    timeouts = {f: fns[f]["timeout"] for f in FUNCTIONS}
    poll_env = dict(base_env, LOTSAWA_EMULATE_ENDPOINT=endpoint, LOTSAWA_EMULATE_PORTS=json.dumps(ports),
                    LOTSAWA_EMULATE_TIMEOUTS=json.dumps(timeouts), LOTSAWA_EMULATE_QUEUES=json.dumps(urls),
                    LOTSAWA_EMULATE_ADMIN=f"{admin[0]}:{admin[1]}")
    pids.append(start(subcommand("poll"), STATE_DIR / "poll.log", poll_env).pid)
    # API Gateway: the template's HTTP API (routes, authorizer, limits) in
    # front of the api function.
    gw_port = free_port()
    gw_env = dict(base_env, LOTSAWA_EMULATE_PORTS=json.dumps(ports), LOTSAWA_EMULATE_TIMEOUTS=json.dumps(timeouts),
                  LOTSAWA_EMULATE_ROUTES=json.dumps(gateway.route_spec(cfn, params)))
    pids.append(start(subcommand("gateway", str(gw_port)), STATE_DIR / "gateway.log", gw_env).pid)
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
    print(f"TABLE={TABLE}")
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
    cpu.release(state.get("cgroups", []))
    state_file.unlink()
    log("stopped")
