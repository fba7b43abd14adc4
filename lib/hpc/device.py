"""Which compute device a process runs on: ``--device auto|cpu|gpu`` resolved in one place.

Shared by label transfer (scVI, XGBoost) and the co-expression GEMM backend
(``dcoex.backend``). PyTorch is imported only when a GPU may be used (``auto``, ``gpu``) and
the NVIDIA driver is present, so ``cpu`` works where torch is not installed (the core install
has no torch) and ``auto`` on a CPU node costs no torch import.
"""

from __future__ import annotations

import importlib.util
import os

from hpc.errors import InputError

#: The values of every ``--device`` flag.
DEVICES = ("auto", "cpu", "gpu")
#: Files that exist wherever the NVIDIA kernel driver is loaded (CUDA needs it).
NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


def nvidia_driver_present() -> bool:
    """Whether the NVIDIA kernel driver is visible (cheap: no torch import)."""
    return any(os.path.exists(path) for path in NVIDIA_DRIVER_FILES)


def gpu_available() -> bool:
    """Whether torch is installed and sees a CUDA device. Without the NVIDIA driver torch is
    not imported at all (its import alone adds ~130 MiB of RSS that a CPU task's memory
    estimate does not hold)."""
    if not nvidia_driver_present() or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """``auto`` -> "gpu" when torch sees one, else "cpu"; ``cpu`` -> "cpu"; ``gpu`` without a
    CUDA device -> InputError (one line)."""
    if device not in DEVICES:
        raise InputError(f"--device must be auto, cpu or gpu, got {device!r}")
    if device == "cpu":
        return "cpu"
    if gpu_available():
        return "gpu"
    if device == "gpu":
        raise InputError("--device gpu was asked for but torch sees no CUDA GPU (use --device auto to fall back to CPU)")
    return "cpu"
