"""Choosing a torch device from a user's setting, and naming it in reports."""

from __future__ import annotations

import platform

import torch

from styletransfer.runtime.errors import ConfigError


def resolve_device(name: str, setting: str = "--device") -> torch.device:
    """``auto`` (the GPU when there is one), ``cpu``, ``gpu``/``cuda`` or ``cuda:N``; ``setting`` names the flag
    or key in errors (a CUDA device on a machine without CUDA is an error, not a silent CPU run)."""
    name = str(name).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device("cuda" if name == "gpu" else name)
    except RuntimeError:
        raise ConfigError(f"{setting}={name}: not a device; use auto, cpu, gpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}={name}: CUDA is not available on this machine; use cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{setting}={name}: only cpu and cuda devices are supported")
    return device


def device_name(device: torch.device) -> str:
    """Human-readable device: the GPU's name, or the CPU with its thread count."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
