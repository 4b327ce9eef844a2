"""What every part of the emulation shares: the names of the emulated
resources, where state and the virtualenv live, the log line, free
loopback ports, boto3 clients of the emulated endpoint, waiting for a
server to answer, and starting a process of its own (a subcommand of
infra/emulate.py, moto or a function) in its own session.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3

from sam import ROOT

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


def start(cmd, log_file, env):
    out = open(log_file, "ab")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def subcommand(*args):
    """The command line of one of infra/emulate.py's own subcommands
    (moto-serialized, poll, gateway), run as a process of its own."""
    return [str(VENV / "bin" / "python"), str(ROOT / "infra" / "emulate.py"), *args]
