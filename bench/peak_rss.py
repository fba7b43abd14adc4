"""Run ``python -m MODULE ARGS...`` in this process; at exit write its peak RSS as JSON.

    python bench/peak_rss.py OUT.json dcoex.stages.s01_bootstrap_indices --in-h5 ...

The peak is the kernel's VmHWM of this process (bytes), which starts at exec. Unlike
``ru_maxrss`` (from ``wait4`` or ``getrusage``), it does not inherit the high-water mark
of a large parent that forked the process, so it is the stage's own peak.
"""

from __future__ import annotations

import atexit
import json
import runpy
import sys
from pathlib import Path


def vmhwm_bytes() -> int:
    """Peak resident set size of this process since exec, from /proc/self/status (bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def main() -> None:
    out, module = sys.argv[1], sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    atexit.register(lambda: Path(out).write_text(json.dumps({"peak_rss_bytes": vmhwm_bytes()})))
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
