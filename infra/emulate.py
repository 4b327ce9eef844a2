"""The emulated cloud (see infra/emulate): moto + cargo lambda watch + SQS pollers.

Resources come from template.yaml itself (table schema, queues, dead-letter
redrive, the bucket notification, the state machine file and its
DefinitionSubstitutions), so the emulation and the deployment cannot drift.
Only loopback addresses are used.

This file is the command line only; the code is in infra/emulation/, one
module per concern. The subcommands `up` starts (moto-serialized, poll,
gateway) run this file again, each as a process of its own.
"""

import sys
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emulation import gateway, lambdas, moto_server, resources, stack  # noqa: E402

if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "up":
        stack.up()
    elif command == "down":
        stack.down()
    elif command == "poll":
        lambdas.poll()
    elif command == "api-key":
        # The first key of a deployed stack (infra/README.md): the table
        # named by the stack's output, the caller's own AWS credentials.
        if len(sys.argv) != 4:
            raise SystemExit("usage: infra/api-key TABLE TENANT")
        print(resources.put_api_key({"dynamodb": boto3.client("dynamodb")}, sys.argv[3], table=sys.argv[2]))
    elif command == "gateway":
        gateway.gateway(int(sys.argv[2]))
    elif command == "moto-serialized":
        moto_server.serve_serialized(int(sys.argv[2]))
    elif command == "store":
        moto_server.store(int(sys.argv[2]) if len(sys.argv) > 2 else 32)
    else:
        raise SystemExit("usage: infra/emulate up|down|store [tables]")
