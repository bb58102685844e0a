"""CPU bf16 detection from /proc/cpuinfo flags."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from sbert.hardware import cpu_has_native_bf16, has_bf16_flag

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
