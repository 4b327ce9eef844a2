"""CPU in proportion to memory, as Lambda gives it: each function's
process tree in a cgroup (v1 cpu controller) with its share, where this
machine allows it, and the cgroups removed when the emulation stops.
"""

import os
from pathlib import Path

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")


def cpu_limit(binary, memory, pid):
    """Lambda gives a function CPU in proportion to its memory (one vCPU at
    1,769 MB). Where this machine lets us (cgroup v1 cpu controller, as
    root), the function's watch process and its children get that share,
    scaled by LOTSAWA_EMULATE_CPU_SCALE (default 4: the functions run as
    debug builds here, several times slower than the release builds Lambda
    runs; 0 turns the limit off). Returns a note of what was done."""
    scale = float(os.environ.get("LOTSAWA_EMULATE_CPU_SCALE", "4"))
    share = memory / 1769 * scale
    if scale <= 0:
        return f"{binary}: no CPU limit (LOTSAWA_EMULATE_CPU_SCALE=0)"
    group = CGROUP_CPU / f"lotsawa-emulate-{binary}-{os.getpid()}"
    try:
        group.mkdir(exist_ok=True)
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text(str(max(1000, int(share * 100000))))
        (group / "cgroup.procs").write_text(str(pid))
        return f"{binary}: {memory} MB -> {share:.2f} CPU (cgroup {group.name})"
    except OSError as e:
        return f"{binary}: CPU not limited ({memory} MB would be {share:.2f} CPU): {e.strerror or e}"


def release(groups):
    """Remove the cgroups cpu_limit made (named in the state file)."""
    for group in groups:
        try:
            (CGROUP_CPU / group).rmdir()
        except OSError:
            pass
