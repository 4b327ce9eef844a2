"""The Lambda functions as the emulation runs them: their environment, one
build each, one `cargo lambda watch` each with credentials of its own role
and CPU in proportion to its memory, waiting until each answers, invoking
one, and the `poll` subcommand that plays the event-source mappings (SQS
to a function, each invocation ending at its function's timeout) and the
EventBridge rule announcing ended executions to the dispatcher.
"""

import json
import os
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from sam import ROOT

from .common import (
    BUCKET,
    EVENT_BUS,
    FUNCTIONS,
    REGION,
    STATE_DIR,
    STATE_MACHINE,
    TABLE,
    admin_clients,
    free_port,
    log,
    start,
    wait_http,
)
from .cpu import cpu_limit


def function_env(base_env, endpoint, urls, sm_arn, params, secret_arn):
    """The environment every function runs with (its role's credentials
    are added per function by start_watches)."""
    fn_env = dict(base_env)
    fn_env.update({
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "LOTSAWA_TABLE": TABLE,
        "LOTSAWA_JOB_QUEUE_URL": urls["JobQueue"],
        "LOTSAWA_WORKER_QUEUE_URL": urls["WorkerQueue"],
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
    return fn_env


def build(fn_env):
    log("building the functions")
    # One build per function, exactly as its `cargo lambda watch --bin` will
    # run it (`cargo run --bin <name>`: the workspace's features, the same
    # build `cargo test --workspace` made; `--package` would select other
    # features and rebuild every dependency), so that the first invocation
    # starts at once.
    for f in FUNCTIONS:
        subprocess.run(["cargo", "build", "--quiet", "--bin", f], cwd=ROOT, env=fn_env, check=True)


def start_watches(fns, roles, sts, fn_env, started):
    """Start every function; `started(pid, cgroup or None)` is called as
    each one starts, so the state file names it at once. Returns
    {function: port}."""
    # One `cargo lambda watch` per function: each runs with credentials of
    # its own role (as Lambda gives a function its execution role's), so a
    # call its policies do not allow fails here as on AWS.
    ports = {f: free_port() for f in FUNCTIONS}
    notes = []
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
        note = cpu_limit(f, spec["memory"], proc.pid)
        group = None
        if "cgroup" in note and "not limited" not in note:
            group = note.rsplit("cgroup ", 1)[1].rstrip(")")
        started(proc.pid, group)
        notes.append(note)
    log("CPU:", "; ".join(notes))
    return ports


def wait_started(ports):
    """Until every function answers: the HTTP ones their health check, the
    others an empty batch of records."""
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
