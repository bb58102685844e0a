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


def usable_cpus(
    cgroup_root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup"
) -> int:
    """How many CPUs this process may run on: its affinity mask (taskset, a container's cpuset),
    cut by the tightest cgroup CPU quota on its way to the root (cgroup v2 cpu.max, v1
    cpu.cfs_quota_us / cpu.cfs_period_us) rounded up; at least 1. Not the host's core count
    (os.cpu_count), which oversubscribes a container limited to fewer: every intra-op thread
    past the quota waits for a time slice.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_quota(Path(cgroup_root), Path(proc_cgroup))
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_quota(root: Path, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest CPU quota, in CPUs (2.5 = 250 ms of CPU time per 100 ms), on this process's
    cgroup and its ancestors (a systemd CPUQuota=, a parent slice's); None if none."""
    quotas = (_quota(folder) for folder in _cgroup_folders(root, proc_cgroup))
    return min((q for q in quotas if q is not None), default=None)


def _cgroup_folders(root: Path, proc_cgroup: Path) -> list[Path]:
    """The cgroup folders whose CPU quota binds this process, its own first, up to each
    hierarchy's mount: /proc/self/cgroup names them ("0::/system.slice/x.service" on v2,
    "4:cpu,cpuacct:/docker/ID" on v1, "/" inside a container's own namespace)."""
    roots = ["0::/", "0:cpu:/", "0:cpu,cpuacct:/"]  # the mounts' own folders
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:  # not Linux, or no /proc
        lines = roots
    folders = []
    for line in [*lines, *roots]:  # the roots last: the mount's own quota binds everyone
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if ".." in Path(path).parts:  # outside this namespace's view: not under the mount
            continue
        if controllers == "":  # v2: one hierarchy at the root
            mounts = [root]
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy
            mounts = [root / controllers, root / "cpu", root / "cpu,cpuacct"]
        else:
            continue
        for mount in dict.fromkeys(mounts):
            folder = mount / path.strip("/")
            folders += [folder, *folder.parents[: len(folder.relative_to(mount).parts)]]
    return list(dict.fromkeys(folders))


def _quota(folder: Path) -> float | None:
    """The CPU quota that one cgroup folder sets, in CPUs; None where it sets none."""
    try:
        if (folder / "cpu.max").exists():  # v2
            quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
        else:  # v1
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit():
        return None
    return int(quota) / int(period) if int(period) > 0 and int(quota) > 0 else None
