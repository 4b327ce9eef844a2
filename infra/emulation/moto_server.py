"""moto as the emulation runs it: moto_server serving one DynamoDB request
at a time (the `moto-serialized` subcommand, with the IAM patches when
IAM is enforced), and moto alone with the template's tables and bucket for
the store conformance suite (the `store` subcommand).
"""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import sam

from .common import BUCKET, clients, free_port, start, subcommand, wait_http
from .iam import check_iam_by_resource, states_call_as_their_role


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


def store(count):
    """moto alone, with `count` job tables (the template's schema) and the
    text bucket, for the store conformance suite: prints AWS_ENDPOINT_URL=,
    TABLE_PREFIX=, BUCKET= and READY, then serves until its standard input
    closes (the test process ended), and stops moto."""
    template = sam.load_template()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ, MOTO_PORT=str(port))
    log_file = Path(os.environ.get("LOTSAWA_EMULATE_LOG", os.devnull))
    moto = start(subcommand("moto-serialized", str(port)), log_file, env)
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
