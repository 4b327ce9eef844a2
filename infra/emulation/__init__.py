"""The emulated cloud behind infra/emulate, one module per concern.

common (names, paths, clients, processes), resources (the template's
table, queues, bucket, state machine and event rules created in moto; API
keys), iam (the administrator, the template's roles, and the patches that
make moto check IAM as AWS does), moto_server (moto with DynamoDB
serialized; the store suite's moto), cpu (CPU in proportion to memory),
lambdas (the functions under cargo lambda watch, their invocations and
the SQS pollers), gateway (the template's HTTP API in front of them) and
stack (`up` and `down`, in the order everything starts). infra/emulate.py
is the command line; nothing here imports it.
"""
