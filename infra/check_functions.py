"""Static check of the template's functions (run by infra/lint): every
function is built by cargo-lambda from its own crate, so `sam build`
packages one `bootstrap` per function and never the repository.

For each AWS::Serverless::Function: Metadata BuildMethod rust-cargolambda,
BuildProperties.Binary <bin>, CodeUri functions/<bin>, and that directory's
Cargo.toml declares the binary <bin>.

For each SQS event source: the queue's visibility timeout is longer than
the function's timeout plus its batching window, so a message is never
delivered again while a first invocation still works on it.
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sam import ROOT, load_template  # noqa: E402


def main():
    template = load_template()
    problems = []
    functions = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}
    for name, res in functions.items():
        meta = res.get("Metadata", {})
        binary = meta.get("BuildProperties", {}).get("Binary")
        code_uri = res.get("Properties", {}).get("CodeUri")
        if meta.get("BuildMethod") != "rust-cargolambda":
            problems.append(f"{name}: BuildMethod must be rust-cargolambda")
        if not binary:
            problems.append(f"{name}: no BuildProperties.Binary")
            continue
        if code_uri != f"functions/{binary}":
            problems.append(f"{name}: CodeUri is {code_uri!r}, expected 'functions/{binary}' (its own crate)")
            continue
        manifest = ROOT / code_uri / "Cargo.toml"
        if not manifest.exists():
            problems.append(f"{name}: {manifest} does not exist")
            continue
        bins = re.findall(r'\[\[bin\]\]\s*name\s*=\s*"([^"]+)"', manifest.read_text(encoding="utf-8"))
        if binary not in bins:
            problems.append(f"{name}: {manifest} declares no binary {binary!r} (has {bins})")
    problems.extend(check_queues(template, functions))
    if problems:
        for p in problems:
            print(f"check_functions: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"check_functions: {len(functions)} functions, each built from its own crate")


def check_queues(template, functions):
    """Visibility timeouts against the timeouts of the functions that read the queues."""
    problems = []
    resources = template["Resources"]
    default_timeout = template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    for name, res in functions.items():
        props = res.get("Properties", {})
        timeout = props.get("Timeout", default_timeout)
        for event_name, event in props.get("Events", {}).items():
            if event.get("Type") != "SQS":
                continue
            ep = event.get("Properties", {})
            queue = ep.get("Queue", {})
            ref = queue.get("Fn::GetAtt") if isinstance(queue, dict) else None
            if isinstance(ref, str):
                ref = ref.split(".")
            if not ref or ref[0] not in resources:
                problems.append(f"{name}.{event_name}: queue is not a GetAtt of a queue in the template")
                continue
            visibility = resources[ref[0]].get("Properties", {}).get("VisibilityTimeout", 30)
            window = ep.get("MaximumBatchingWindowInSeconds", 0)
            if visibility < timeout + window:
                problems.append(
                    f"{name}.{event_name}: {ref[0]} VisibilityTimeout {visibility} s is shorter than "
                    f"the function's Timeout {timeout} s + batching window {window} s"
                )
    return problems


if __name__ == "__main__":
    main()
