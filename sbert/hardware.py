"""What the CPU computes natively: bf16 support, for `--precision auto` (bf16 autocast only where
the hardware multiplies bf16 itself; elsewhere emulated bf16 is slower than fp32); and how many
CPUs this process may use, for the runtimes' intra-op threads.

Read from the kernel's CPU flags (/proc/cpuinfo, Linux), not from
`torch.backends.cpu.get_cpu_capability()`: that names the vector ISA torch dispatches to
("AVX512", "AVX2", ...) and says nothing of the BF16 or AMX extensions.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# x86: AVX-512 BF16 (Cooper Lake, Zen 4 and later) or AMX-BF16 tiles (Sapphire Rapids and
# later); Arm: the BF16 extension of Armv8.6-A (Graviton 3, Neoverse V1/N2).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU has AVX-512-BF16, AMX-BF16 or Arm BF16; False when it has none of
    them, or where /proc/cpuinfo cannot be read (not Linux): fp32 is the safe choice."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return has_bf16_flag(text)


def has_bf16_flag(cpuinfo_text: str) -> bool:
    """Whether the flags of the first CPU in a /proc/cpuinfo text name a native bf16 unit."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 says flags, Arm says Features
            return not BF16_FLAGS.isdisjoint(value.split())
    return False


def usable_cpus(cgroup_root: str | Path = "/sys/fs/cgroup") -> int:
    """How many CPUs this process may run on: its affinity mask (taskset, a container's cpuset),
    cut by a cgroup CPU quota (cgroup v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us)
    rounded up; at least 1. Not the host's core count (os.cpu_count), which oversubscribes a
    container limited to fewer: every intra-op thread past the quota waits for a time slice.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_quota(Path(cgroup_root))
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_quota(root: Path) -> float | None:
    """The cgroup's CPU quota in CPUs (2.5 = 250 ms of CPU time per 100 ms), None if none."""
    candidates = [
        (root / "cpu.max", None),  # v2, this process's cgroup mounted at the root
        (root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"),  # v1
        (root / "cpu,cpuacct" / "cpu.cfs_quota_us", root / "cpu,cpuacct" / "cpu.cfs_period_us"),
    ]
    for quota_path, period_path in candidates:
        try:
            if period_path is None:
                quota, _, period = quota_path.read_text().strip().partition(" ")
            else:
                quota, period = quota_path.read_text().strip(), period_path.read_text().strip()
        except OSError:
            continue
        if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit():
            return None
        return int(quota) / int(period) if int(period) > 0 and int(quota) > 0 else None
    return None
