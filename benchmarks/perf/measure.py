"""Timing and memory probes, and a description of the machine.

Peak memory: on CUDA, `torch.cuda.max_memory_allocated` after a reset (exact, tensors only). On Linux CPUs, the
process's resident-set high-water mark (VmHWM), reset before each measured generation through
/proc/self/clear_refs after returning freed heap pages to the OS (malloc_trim): approximate, page-granular, and
it includes every allocation of the process. Elsewhere, `ru_maxrss`, which cannot be reset (marked in the output).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _libc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class MemoryProbe:
    """`start()` before a measured region, `peak()` / `current()` after it, in bytes above the start."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.resettable = self.cuda or self._try_reset()
        self._base = 0

    @property
    def kind(self) -> str:
        if self.cuda:
            return "torch.cuda.max_memory_allocated (tensors only)"
        if self.resettable:
            return "process RSS high-water mark (VmHWM, reset per measurement)"
        return "ru_maxrss (process lifetime peak, not reset: rows after the largest understate)"

    @staticmethod
    def _try_reset() -> bool:
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            return False
        return _status_kb("VmHWM") is not None

    def _now(self) -> int:
        if self.cuda:
            return int(torch.cuda.memory_allocated(self.device))
        rss = _status_kb("VmRSS")
        return 1024 * rss if rss is not None else 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def start(self) -> None:
        """Right before a measured region. On CUDA the allocator's cache is kept (emptying it here would make the
        next timed generation pay for fresh device allocations); `max_memory_allocated` counts tensors only, so
        the peak is exact either way."""
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _libc_trim()
            if self.resettable:
                _CLEAR_REFS.write_text("5")
        self._base = self._now()

    def release(self) -> None:
        """After freeing objects, outside any timed region: return their memory (the device cache too)."""
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
        else:
            _libc_trim()

    def current(self) -> int:
        gc.collect()
        if not self.cuda:
            _libc_trim()
        return max(0, self._now() - self._base)

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return max(0, int(torch.cuda.max_memory_allocated(self.device)) - self._base)
        hwm = _status_kb("VmHWM") if self.resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(0, 1024 * (hwm or 0) - self._base)


def timed(function: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call, with the device drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where the figures were measured: they mean little without it."""
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf") else None,
    }
    with contextlib.suppress(OSError, AttributeError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": sys.version.split()[0], "torch": torch.__version__}
    for package in ("transformers", "antidistill"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    found["cuda"] = torch.version.cuda
    return found
