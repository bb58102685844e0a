"""CPU bf16 detection from /proc/cpuinfo flags."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest

from sbert.hardware import cpu_has_native_bf16, has_bf16_flag, usable_cpus

X86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n"
ARM = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve {extra}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (X86.format(extra="avx512_vnni avx512_bf16"), True),
        (X86.format(extra="amx_tile amx_bf16 amx_int8"), True),
        (X86.format(extra="avx512_vnni"), False),  # int8 dot products, no bf16
        (X86.format(extra="avx512_bf16x"), False),  # whole flags only
        (ARM.format(extra="i8mm bf16"), True),
        (ARM.format(extra="i8mm"), False),
        ("", False),
    ],
)
def test_flags(text, expected):
    assert has_bf16_flag(text) is expected


def test_file(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(X86.format(extra="avx512_bf16"))
    assert cpu_has_native_bf16(path) is True
    assert cpu_has_native_bf16(tmp_path / "missing") is False


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.machine() != "x86_64",
    reason="reads the x86 flags of /proc/cpuinfo",
)
def test_this_machine():
    flags = next(
        line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
    ).split()
    assert cpu_has_native_bf16() is ("avx512_bf16" in flags or "amx_bf16" in flags)


@pytest.mark.parametrize(
    ("files", "affinity", "expected"),
    [
        ({}, {0, 1, 2, 3}, 4),  # no cgroup limit: the affinity mask
        ({"cpu.max": "max 100000\n"}, {0, 1, 2, 3}, 4),
        ({"cpu.max": "150000 100000\n"}, {0, 1, 2, 3}, 2),  # 1.5 CPUs of quota: 2 threads
        ({"cpu.max": "120000 100000\n"}, {0, 1, 2, 3}, 2),  # a part of a CPU is one more
        ({"cpu.max": "250000 100000\n"}, {0, 1, 2, 3}, 3),
        ({"cpu.max": "50000 100000\n"}, {0, 1, 2, 3}, 1),
        ({"cpu.max": "800000 100000\n"}, {0, 1}, 2),  # quota above the mask: the mask
        (
            {"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"},
            set(range(8)),
            3,
        ),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, {0, 1, 2}, 3),
    ],
)
def test_usable_cpus_follows_affinity_and_cgroup_quota(
    tmp_path, monkeypatch, files, affinity, expected
):
    write_files(tmp_path, files)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: affinity, raising=False)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("1:cpu:/\n0::/\n")  # a container's own namespace: its cgroup is the root
    assert usable_cpus(tmp_path, proc) == expected


def write_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.mark.parametrize(
    ("cgroup", "files", "expected"),
    [
        # systemd's CPUQuota= on a service: its own cgroup, below the mount
        ("0::/system.slice/job.service", {"system.slice/job.service/cpu.max": "100000 100000"}, 1),
        # a parent slice's quota is tighter than the service's own
        (
            "0::/system.slice/job.service",
            {
                "system.slice/cpu.max": "150000 100000",
                "system.slice/job.service/cpu.max": "400000 100000",
            },  # fmt: skip
            2,
        ),
        # cgroup v1, a container without its own cgroup namespace
        (
            "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc",
            {
                "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000",
                "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
            },  # fmt: skip
            3,
        ),
        ("0::/other.slice", {"system.slice/cpu.max": "100000 100000"}, 8),  # not ours
        ("1:name=systemd:/user.slice", {"cpu.max": "200000 100000"}, 2),  # no cpu line: the root
        ("0::/../elsewhere", {"cpu.max": "300000 100000", "../elsewhere/cpu.max": "1 100000"}, 3),
    ],
    ids=[
        "v2-service",
        "v2-parent-tighter",
        "v1-docker",
        "v2-another-cgroup",
        "no-cpu-line",
        "outside-the-namespace",
    ],  # fmt: skip
)
def test_usable_cpus_finds_the_processs_own_cgroup(tmp_path, monkeypatch, cgroup, files, expected):
    write_files(tmp_path / "fs", files)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(cgroup + "\n")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert usable_cpus(tmp_path / "fs", proc) == expected


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_usable_cpus_on_this_machine_is_at_most_the_affinity_mask():
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
