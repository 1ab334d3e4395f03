"""Peak memory of this process, measured so a child process is not charged for its parent's.

``getrusage(RUSAGE_SELF).ru_maxrss`` survives ``execve``: Linux carries the high-water mark of the
memory a process had before it exec'd, and a child forked from a bench's parent starts with the
parent's whole RSS. A child started after the parent landed and validated 30x the data reported the
parent's 2.9 GB as its own peak. ``VmHWM`` is the high-water mark of this process's own address
space, which starts anew at exec.
"""

from __future__ import annotations


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB), since it exec'd."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line (not Linux?)")
