"""Checks on template.yaml and the state machine for rules AWS enforces and
no linter or emulator checks (infra/lint runs it; `--self-test` shows that
each check refuses the broken form it exists for).

- history: the worst-case history of one Standard execution, for the
  template's largest ChunksPerExecution and MaxAttempts, stays under
  25,000 events (a chunk or a retry of a chunk makes a fixed number of
  events; the state machine counts both toward the segment's limit);
- partition: no ARN in the state machine names the `aws` partition;
- failures: only the worker's `Lotsawa.Permanent` ends a chunk's attempts at
  once (an SQS error sending the task is retried); a failure the fail task
  recorded ends the execution SUCCEEDED (ExecutionsFailed alarms only on
  runs whose failure could not be recorded);
- topic: a topic policy replaces the default one, so every alarm and rule
  publishing to a topic with a policy must be allowed by it;
- queues: each SQS event source's visibility timeout exceeds its function's
  timeout (a message must not come back while its handler still runs).
"""

import copy
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emulation.gateway import match_route  # noqa: E402
from sam import ROOT, load_template  # noqa: E402

HISTORY_LIMIT = 25_000

# Events a state adds to an execution's history each time it runs.
# A Task: StateEntered, Scheduled, Started, Submitted, Succeeded|Failed|
# TimedOut, StateExited.
EVENTS = {"Task": 6, "Pass": 2, "Choice": 2, "Wait": 2, "Succeed": 2, "Fail": 1, "Map": 6, "Parallel": 6}
# ExecutionStarted and the execution's end.
EXECUTION_EVENTS = 2
# The self-test checks broken copies quietly.
VERBOSE = True


def load_asl(template):
    sm = template["Resources"]["JobStateMachine"]["Properties"]
    return json.loads((ROOT / sm["DefinitionUri"]).read_text(encoding="utf-8"))


def successors(state):
    out = []
    if "Next" in state:
        out.append(state["Next"])
    for c in state.get("Catch", []):
        out.append(c["Next"])
    for c in state.get("Choices", []):
        out.append(c["Next"])
    if "Default" in state:
        out.append(state["Default"])
    return out


def done_increment(state):
    """How much a state adds to the loop's `done` counter."""
    expr = state.get("Parameters", {}).get("done.$", "")
    m = re.fullmatch(r"States\.MathAdd\(\$\.loop\.done, (\d+)\)", expr)
    if m:
        return int(m.group(1))
    return 0


def cycles_through(states, start):
    """Every simple path from `start` back to `start`."""
    found = []

    def walk(name, path):
        for nxt in successors(states[name]):
            if nxt == start:
                found.append(path + [name])
            elif nxt not in path and nxt != name:
                walk(nxt, path + [name])

    walk(start, [])
    return found


def longest_tail(states, start, loop_head):
    """The most events on a path from `start` to the execution's end that
    does not go round the loop again."""
    best = 0

    def walk(name, seen, events):
        nonlocal best
        st = states[name]
        events += EVENTS[st["Type"]]
        nexts = [n for n in successors(st) if n != loop_head and n not in seen]
        if st["Type"] in ("Succeed", "Fail") or not successors(st):
            best = max(best, events)
        for n in nexts:
            walk(n, seen | {n}, events)

    walk(start, {start}, 0)
    return best


def check_history(template, asl):
    params = template["Parameters"]
    limit = int(params["ChunksPerExecution"]["MaxValue"])
    max_attempts = int(params["MaxAttempts"]["MaxValue"])
    states = asl["States"]
    head = next(n for n, s in states.items() if s.get("Type") == "Task"
                and s.get("Parameters", {}).get("MessageBody", {}).get("action") == "chunk")
    cycles = cycles_through(states, head)
    if not cycles:
        return ["history: no loop through the chunk task"]
    errors = []
    costs = []
    for path in cycles:
        events = sum(EVENTS[states[n]["Type"]] for n in path)
        counted = sum(done_increment(states[n]) for n in path)
        if counted == 0:
            errors.append(f"history: the loop {' -> '.join(path)} ({events} events) does not count toward "
                          "the segment's limit: its repetitions are unbounded")
            continue
        costs.append((events, counted, path))
    if errors:
        return errors
    per_unit = max(e / c for e, c, _ in costs)
    chunk = min(costs, key=lambda x: len(x[2]))
    retry = max(costs, key=lambda x: x[1])
    # The segment ends when `done` reaches the limit after a chunk: before
    # that check done < limit, then one chunk with every retry it may take.
    worst_done = (limit - 1) + chunk[1] + (max_attempts - 1) * retry[1]
    first = asl["StartAt"]
    prefix = EVENTS[states[first]["Type"]] if first != head else 0
    tail = max(longest_tail(states, n, head) for p in cycles for n in p if n != head)
    worst = EXECUTION_EVENTS + prefix + int(per_unit * worst_done) + tail + EVENTS["Task"]
    if VERBOSE:
        print(f"history: worst case {worst} events (ChunksPerExecution {limit}, MaxAttempts {max_attempts}, "
          f"{per_unit:g} events per counted unit, tail {tail}) of {HISTORY_LIMIT}")
    if worst >= HISTORY_LIMIT:
        errors.append(f"history: an execution may reach {worst} events (limit {HISTORY_LIMIT})")
    return errors


def check_partition(asl):
    text = json.dumps(asl)
    if re.search(r"arn:aws:", text):
        return ["partition: the state machine names the aws partition; use ${Partition}"]
    return []


def check_failures(asl):
    errors = []
    states = asl["States"]
    for name, st in states.items():
        body = st.get("Parameters", {}).get("MessageBody", {})
        action = body.get("action") if isinstance(body, dict) else None
        if action == "chunk":
            for c in st.get("Catch", []):
                target = states[c["Next"]]
                tbody = target.get("Parameters", {}).get("MessageBody", {})
                if tbody.get("action") == "fail" and c["ErrorEquals"] != ["Lotsawa.Permanent"]:
                    errors.append(f"failures: {name} sends {c['ErrorEquals']} to {c['Next']}: only "
                                  "Lotsawa.Permanent may end the attempts at once (an SQS error is transient)")
        if action == "fail":
            nxt = states[st["Next"]]
            if nxt["Type"] != "Succeed":
                errors.append(f"failures: {name} recorded the failure, then goes to {st['Next']} ({nxt['Type']}): "
                              "an ordinary job failure must not fail the execution (ExecutionsFailed alarm)")
    return errors


def ref_name(value):
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            att = value["Fn::GetAtt"]
            return att[0] if isinstance(att, list) else att.split(".")[0]
    return None


def check_topics(template):
    res = template["Resources"]
    errors = []
    policies = {}
    for name, r in res.items():
        if r["Type"] == "AWS::SNS::TopicPolicy":
            for t in r["Properties"]["Topics"]:
                policies[ref_name(t)] = (name, r["Properties"]["PolicyDocument"]["Statement"])

    def allowed(statements, service):
        return any(s.get("Effect") == "Allow" and s.get("Principal", {}).get("Service") == service
                   and "sns:Publish" in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
                   for s in statements)

    for name, r in res.items():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::CloudWatch::Alarm":
            for a in props.get("AlarmActions", []):
                topic = ref_name(a)
                if topic in policies and not allowed(policies[topic][1], "cloudwatch.amazonaws.com"):
                    errors.append(f"topic: {name} publishes to {topic}, whose policy {policies[topic][0]} "
                                  "does not let CloudWatch publish")
        if r["Type"] == "AWS::Events::Rule":
            for t in props.get("Targets", []):
                topic = ref_name(t.get("Arn"))
                if topic in policies and not allowed(policies[topic][1], "events.amazonaws.com"):
                    errors.append(f"topic: {name} publishes to {topic}, whose policy {policies[topic][0]} "
                                  "does not let EventBridge publish")
    return errors


def check_queues(template):
    res = template["Resources"]
    default = template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    errors = []
    for name, r in res.items():
        if r["Type"] != "AWS::Serverless::Function":
            continue
        timeout = int(r["Properties"].get("Timeout", default))
        for ev_name, ev in r["Properties"].get("Events", {}).items():
            if ev["Type"] != "SQS":
                continue
            queue = ref_name(ev["Properties"]["Queue"])
            vis = int(res[queue]["Properties"].get("VisibilityTimeout", 30))
            if vis <= timeout:
                errors.append(f"queues: {queue} visibility timeout {vis}s is not longer than {name}'s "
                              f"timeout {timeout}s ({ev_name})")
    return errors


def check_dashboard(template):
    """The page must load in a browser through API Gateway: the page, its
    assets and page routes need no key (a browser loading them sends no
    Authorization header), and the stream URL it opens must take no
    signature (an EventSource cannot sign)."""
    import sam
    cfn = sam.expand(template)
    routes, _ = sam.routes(cfn)
    errors = []
    for method, path in [("GET", "/"), ("GET", "/assets/app.js"), ("GET", "/assets/config.json"),
                         ("GET", "/jobs/00000000-0000-0000-0000-000000000000"),
                         ("GET", "/batches/00000000-0000-0000-0000-000000000000")]:
        route, _ = match_route(routes, method, path)
        if route is None:
            errors.append(f"dashboard: no route of the HTTP API matches {method} {path}")
        elif route["authorizer"]:
            errors.append(f"dashboard: {method} {path} goes through the {route['authorizer']} authorizer "
                          "(a browser loading it sends no key)")
    for name, url in sam.function_urls(cfn).items():
        if url["auth"] != "NONE":
            errors.append(f"dashboard: {name}'s URL uses {url['auth']} auth, which a browser's EventSource cannot sign")
    return errors


def check(template, asl):
    return (check_history(template, asl) + check_partition(asl) + check_failures(asl)
            + check_topics(template) + check_queues(template) + check_dashboard(template))


def self_test(template, asl):
    """Each check must refuse the broken form it exists for."""
    global VERBOSE
    VERBOSE = False
    cases = []

    t, a = copy.deepcopy(template), copy.deepcopy(asl)
    a["States"]["Backoff"]["Parameters"]["done.$"] = "$.loop.done"
    cases.append(("retries not counted", t, a, "history"))

    t, a = copy.deepcopy(template), copy.deepcopy(asl)
    t["Parameters"]["ChunksPerExecution"]["MaxValue"] = 3000
    cases.append(("too many chunks per execution", t, a, "history"))

    t, a = copy.deepcopy(template), copy.deepcopy(asl)
    a["States"]["Translate"]["Resource"] = "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
    cases.append(("literal partition", t, a, "partition"))

    t, a = copy.deepcopy(template), copy.deepcopy(asl)
    a["States"]["Translate"]["Catch"] = [
        {"ErrorEquals": ["Lotsawa.Transient", "States.Timeout"], "Next": "Backoff"},
        {"ErrorEquals": ["States.ALL"], "Next": "FailPermanent"},
    ]
    cases.append(("SQS error treated as permanent", t, a, "failures"))

    t, a = copy.deepcopy(template), copy.deepcopy(asl)
    a["States"]["FailPermanent"]["Next"] = "JobFailed"
    cases.append(("recorded failure fails the execution", t, a, "failures"))

    t, a = copy.deepcopy(template), copy.deepcopy(asl)
    stmts = t["Resources"]["AlarmTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    t["Resources"]["AlarmTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"] = [
        s for s in stmts if s.get("Principal", {}).get("Service") != "cloudwatch.amazonaws.com"]
    cases.append(("alarms cannot publish", t, a, "topic"))

    t, a = copy.deepcopy(template), copy.deepcopy(asl)
    t["Resources"]["WorkerQueue"]["Properties"]["VisibilityTimeout"] = 900
    cases.append(("visibility timeout equal to the function's timeout", t, a, "queues"))

    t, a = copy.deepcopy(template), copy.deepcopy(asl)
    events = t["Resources"]["ApiFunction"]["Properties"]["Events"]
    for name in ["Page", "Assets", "JobPage", "BatchPage"]:
        events.pop(name, None)
    cases.append(("dashboard behind the authorizer", t, a, "dashboard"))

    t, a = copy.deepcopy(template), copy.deepcopy(asl)
    t["Resources"]["StreamFunction"]["Properties"]["FunctionUrlConfig"]["AuthType"] = "AWS_IAM"
    cases.append(("stream URL only IAM can call", t, a, "dashboard"))

    failed = 0
    for label, t, a, kind in cases:
        errors = check(t, a)
        if not any(e.startswith(kind + ":") for e in errors):
            print(f"self-test: {label}: the {kind} check did not refuse it", file=sys.stderr)
            failed += 1
        else:
            print(f"self-test: {label}: refused")
    return failed


def substituted_asl():
    """The state machine file with its DefinitionSubstitutions filled in as
    a deployment would (parameter defaults, the aws partition, example queue
    URLs), for validators that check ARNs and URLs."""
    template = load_template()
    sm = template["Resources"]["JobStateMachine"]["Properties"]
    text = (ROOT / sm["DefinitionUri"]).read_text(encoding="utf-8")
    params = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
    for key, value in sm["DefinitionSubstitutions"].items():
        ref = ref_name(value)
        if ref == "AWS::Partition":
            value = "aws"
        elif ref in params:
            value = params[ref]
        else:
            value = f"https://sqs.us-east-1.amazonaws.com/123456789012/{ref}"
        text = text.replace("${" + key + "}", value)
    if "${" in text:
        raise SystemExit("an unresolved substitution in the state machine")
    return text


def main():
    if "--substituted-asl" in sys.argv:
        sys.stdout.write(substituted_asl())
        return
    template = load_template()
    asl = load_asl(template)
    errors = check(template, asl)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        sys.exit(1)
    if "--self-test" in sys.argv and self_test(template, asl):
        sys.exit(1)
    print("template checks passed")


if __name__ == "__main__":
    main()
