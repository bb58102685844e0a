"""Where a model runs: the device a user names, else this process's GPU, else the CPU."""

from __future__ import annotations

import torch

from sbert.errors import ConfigError


def pick_device(name: str | None, local_rank: int = 0) -> torch.device:
    """The named device, else this process's CUDA device when present, else the CPU."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"--device {name}: not a device (cpu, cuda, cuda:1 ...)") from None
        if device.type not in ("cpu", "cuda"):  # meta, mps, xpu...: untested here, refused
            raise ConfigError(f"--device {name}: not supported (cpu, cuda, cuda:1 ...)")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: this torch sees no CUDA device")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")  # fmt: skip
        if device.type == "cuda" and device.index is None:
            return torch.device("cuda", local_rank)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`, without making the host wait: on CUDA it is copied from
    pinned pages, asynchronously (from pageable memory the copy waits for the device to finish
    its queue), so the host prepares the next batch while this one runs."""
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively on `device`: CUDA GPUs from Ampere on, or a CPU with a
    bf16 unit (sbert/hardware.py). Where bf16 is emulated it is slower than fp32, so `--precision
    auto` keeps fp32 there."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    from sbert.hardware import cpu_has_native_bf16

    return cpu_has_native_bf16()
