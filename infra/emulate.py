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
        # named by the stack's output, the caller's own AWS credentials;
        # `--monthly-tokens N` sets the tenant's budget with it.
        args = sys.argv[2:]
        budget = None
        if len(args) == 4 and args[2] == "--monthly-tokens":
            budget, args = args[3], args[:2]
        if len(args) != 2 or (budget is not None and not budget.isdigit()):
            raise SystemExit("usage: infra/api-key TABLE TENANT [--monthly-tokens N]")
        c = {"dynamodb": boto3.client("dynamodb")}
        if budget is not None:
            resources.put_budget(c, args[1], int(budget), table=args[0])
        print(resources.put_api_key(c, args[1], table=args[0]))
    elif command == "budget":
        # A tenant's monthly token budget on a deployed stack.
        args = sys.argv[2:]
        if len(args) != 3 or not (args[2].isdigit() or args[2] == "unlimited"):
            raise SystemExit("usage: infra/budget TABLE TENANT N|unlimited")
        resources.put_budget({"dynamodb": boto3.client("dynamodb")}, args[1],
                             None if args[2] == "unlimited" else int(args[2]), table=args[0])
        print(f"tenant {args[1]}: monthly budget {args[2]}")
    elif command == "gateway":
        gateway.gateway(int(sys.argv[2]))
    elif command == "moto-serialized":
        moto_server.serve_serialized(int(sys.argv[2]))
    elif command == "store":
        moto_server.store(int(sys.argv[2]) if len(sys.argv) > 2 else 32)
    else:
        raise SystemExit("usage: infra/emulate up|down|store [tables]")
