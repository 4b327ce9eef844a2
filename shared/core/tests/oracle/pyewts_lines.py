"""Each line of stdin in EWTS, one line out per line in, by pyewts (BDRC's
converter, the reference implementation of EWTS). Used by ewts_oracle.rs."""
import sys

import pyewts

converter = pyewts.pyewts()
data = sys.stdin.buffer.read().decode("utf-8")
lines = data.split("\n")
if lines and lines[-1] == "":
    lines.pop()
out = [converter.toWylie(line) for line in lines]
sys.stdout.buffer.write(("\n".join(out) + "\n").encode("utf-8"))
