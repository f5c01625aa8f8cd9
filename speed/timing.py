"""Timing helpers shared by the speed scripts: the device is synchronised only around a timed loop."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], object], device: torch.device, steps: int, warmup: int) -> tuple[float, float | None]:
    """(mean seconds per call of ``step`` after ``warmup`` untimed calls, peak CUDA memory in MiB or None)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return seconds, peak


def self_time(event: object, device: torch.device) -> float:
    """A profiler event's self time in microseconds: on the device on CUDA (either attribute name torch has used),
    on the CPU otherwise."""
    if device.type != "cuda":
        return float(getattr(event, "self_cpu_time_total", 0.0))
    return float(getattr(event, "self_device_time_total", 0.0) or getattr(event, "self_cuda_time_total", 0.0))


def print_top_kernels(prof: torch.profiler.profile, label: str, calls: int, device: torch.device,
                      top: int = 15) -> None:
    """Print the ``top`` kernels (CUDA kernels on a GPU, CPU ops otherwise) of ``prof``, which recorded ``calls``
    calls, by self time: ms per call and share, as a markdown table."""
    events = [event for event in prof.key_averages() if self_time(event, device) > 0]
    total = sum(self_time(event, device) for event in events) or 1.0
    kind = "CUDA kernels" if device.type == "cuda" else "CPU ops"
    print(f"\nprofile: {label}: top {top} {kind} by self time ({calls} calls, {total / calls / 1e3:.2f} ms per call)")
    print("| kernel | self ms/call | share |\n| --- | --- | --- |")
    for event in sorted(events, key=lambda event: self_time(event, device), reverse=True)[:top]:
        value = self_time(event, device)
        print(f"| {event.key[:90]} | {value / calls / 1e3:.3f} | {100 * value / total:.1f}% |")
