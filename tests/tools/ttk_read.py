"""Print what translate-toolkit reads from a TMX or XLIFF 2 file, as one JSON
object: {"sourcelang", "targetlang", "units": [{"id", "source", "target",
"state"}]}. It is the independent reader that checks the files Lotsawa
writes (lotsawa_core::exchange). Usage: ttk_read.py FILE (.tmx, .xlf, .xliff).
"""
import json
import sys

from translate.misc.xml_helpers import getXMLlang
from translate.storage import tmx, xliff2


def read_xliff(path):
    with open(path, "rb") as f:
        store = xliff2.Xliff2File(f)
    units = [
        {
            "id": unit.getid(),
            "source": unit.source,
            "target": unit.target,
            # The raw attribute of the <segment>, not translate-toolkit's
            # mapping of it to its own workflow states.
            "state": unit.xmlelement.get("state"),
        }
        for unit in store.units
    ]
    return store.sourcelanguage, store.targetlanguage, units


def read_tmx(path):
    with open(path, "rb") as f:
        store = tmx.tmxfile(f)
    targetlang = store.targetlanguage
    if targetlang is None:
        # A TMX header names only the source language: take the first other
        # language a unit has.
        targetlang = next(
            (
                lang
                for unit in store.units
                for node in unit.getlanguageNodes()
                if (lang := getXMLlang(node)) and lang != store.sourcelanguage
            ),
            None,
        )
    units = [
        {
            "id": unit.getid(),
            "source": unit.source,
            "target": unit.target,
            "state": None,
        }
        for unit in store.units
    ]
    return store.sourcelanguage, targetlang, units


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: ttk_read.py FILE\n")
        return 2
    path = argv[1]
    lower = path.lower()
    if lower.endswith(".tmx"):
        sourcelang, targetlang, units = read_tmx(path)
    elif lower.endswith((".xlf", ".xliff")):
        sourcelang, targetlang, units = read_xliff(path)
    else:
        sys.stderr.write(f"ttk_read.py: {path}: expected .tmx, .xlf or .xliff\n")
        return 2
    out = {"sourcelang": sourcelang, "targetlang": targetlang, "units": units}
    sys.stdout.buffer.write(json.dumps(out, ensure_ascii=False).encode("utf-8"))
    sys.stdout.buffer.write(b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
