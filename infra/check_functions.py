"""Static check of the template's functions (run by infra/lint): every
function is built by cargo-lambda from its own crate, so `sam build`
packages one `bootstrap` per function and never the repository.

For each AWS::Serverless::Function: Metadata BuildMethod rust-cargolambda,
BuildProperties.Binary <bin>, CodeUri functions/<bin>, and that directory's
Cargo.toml declares the binary <bin>.
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emulate import ROOT, load_template  # noqa: E402


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
    if problems:
        for p in problems:
            print(f"check_functions: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"check_functions: {len(functions)} functions, each built from its own crate")


if __name__ == "__main__":
    main()
