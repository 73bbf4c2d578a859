"""Per-process CPU time and resident memory read from /proc, shared by the benches."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, all threads, in seconds."""
    # The command name in parentheses may hold spaces: split after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_secs(pid: int) -> float:
    """utime + stime of a process, all threads, in seconds."""
    return sum(cpu_times(pid))


def rss_kb(pid: int) -> int:
    """VmRSS of a process in KiB (0 if the kernel does not report it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
