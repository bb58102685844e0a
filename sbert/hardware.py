"""What the CPU computes natively: bf16 support, for `--precision auto` (bf16 autocast only where
the hardware multiplies bf16 itself; elsewhere emulated bf16 is slower than fp32).

Read from the kernel's CPU flags (/proc/cpuinfo, Linux), not from
`torch.backends.cpu.get_cpu_capability()`: that names the vector ISA torch dispatches to
("AVX512", "AVX2", ...) and says nothing of the BF16 or AMX extensions.
"""

from __future__ import annotations

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
