"""Edit an XLIFF 2 file the way a CAT tool would, with translate-toolkit, and
save it with translate-toolkit's own serializer: the file Lotsawa then has
to read back (lotsawa_core::exchange::parse_xliff).

Usage: ttk_edit.py IN OUT EDITS, where EDITS is a JSON object (given inline,
or as the path of a file holding it) from unit id to either the new target
text ({"c0": "new text"}) or {"target": "new text", "state": "reviewed"}
(either key may be left out). Every unit named must exist.
"""
import json
import os
import sys

from translate.misc.xml_helpers import setXMLspace
from translate.storage import xliff2

STATES = {"initial", "translated", "reviewed", "final"}


def load_edits(arg):
    text = arg
    if not arg.lstrip().startswith("{") and os.path.exists(arg):
        with open(arg, encoding="utf-8") as f:
            text = f.read()
    edits = json.loads(text)
    if not isinstance(edits, dict):
        raise ValueError("EDITS must be a JSON object")
    return edits


def set_target(unit, text):
    dom = unit.get_target_dom()
    if dom is not None:
        # translate-toolkit's setter replaces only the leading text of an
        # existing <target> and keeps its inline children: drop them first.
        for child in list(dom):
            dom.remove(child)
        dom.text = None
    unit.target = text
    # A <target> translate-toolkit creates has no xml:space; without it a
    # reader may collapse the whitespace of the new text.
    dom = unit.get_target_dom()
    if dom is not None:
        setXMLspace(dom, "preserve")


def set_state(unit, state):
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}")
    # translate-toolkit's own markers where it has one; it has none for final.
    if state == "translated":
        unit.marktranslated()
    elif state == "reviewed":
        unit.markapproved(True)
    elif state == "initial":
        unit.markfuzzy(True)
    else:
        unit.xmlelement.set("state", state)


def main(argv):
    if len(argv) != 4:
        sys.stderr.write("usage: ttk_edit.py IN OUT EDITS\n")
        return 2
    src, dst, edits_arg = argv[1:]
    edits = load_edits(edits_arg)
    with open(src, "rb") as f:
        store = xliff2.Xliff2File(f)
    seen = set()
    for unit in store.units:
        uid = unit.getid()
        if uid not in edits:
            continue
        seen.add(uid)
        value = edits[uid]
        if isinstance(value, str):
            set_target(unit, value)
        elif isinstance(value, dict):
            if "target" in value:
                set_target(unit, value["target"])
            if value.get("state") is not None:
                set_state(unit, value["state"])
        else:
            raise ValueError(f"{uid}: expected a string or an object")
    missing = sorted(set(edits) - seen)
    if missing:
        sys.stderr.write(f"ttk_edit.py: no such units: {', '.join(missing)}\n")
        return 1
    with open(dst, "wb") as f:
        store.serialize(f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
