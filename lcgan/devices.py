"""Which device to run on, and how inference runs fast there: mixed precision, memory layout, batch size.

One owner for ``device=auto`` (every entry point resolves its ``device`` here) and for the inference
settings that evaluation and its benchmark share.
"""
from __future__ import annotations

import contextlib

import torch

AMP_MODES = ("auto", "bf16", "none")  # auto: bf16 on CUDA, full precision elsewhere
GIB = 2**30
GIB_PER_IMAGE_256 = 0.75  # peak GPU memory per 256 px image through SD-VAE decode + metric nets in bf16, with margin
MAX_AUTO_BATCH = 128  # beyond this the GPU is saturated and host-side work grows per batch
CPU_BATCH = 16


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda``/``cuda:N`` without CUDA is an error naming the fix."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available here; use device=auto or device=cpu")
    return torch.device(name)


def describe(device: torch.device) -> str:
    """The device in words, for benchmark tables: ``NVIDIA H200`` or ``cpu (16 threads)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def amp_enabled(amp: str, device: torch.device) -> bool:
    """Whether ``eval.amp`` runs bf16 autocast on ``device`` (``bf16`` forces it, also on a CPU)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp={amp!r}: choose {', '.join(AMP_MODES)}")
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled``; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def channels_last(*modules: torch.nn.Module) -> None:
    """Convolution weights in NHWC, the layout cuDNN's fast kernels use; on a CPU nothing changes."""
    for m in modules:
        if next(m.parameters(), torch.empty(0)).device.type == "cuda":
            m.to(memory_format=torch.channels_last)


def auto_batch_size(device: torch.device, image_size: int) -> int:
    """Images per call for ``eval.batch_size=null``: as many as half the free GPU memory holds (a power of two,
    at most MAX_AUTO_BATCH); CPU_BATCH on a CPU, where a larger batch buys nothing."""
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    per_image = GIB_PER_IMAGE_256 * GIB * (image_size / 256) ** 2
    fits = max(1, int(0.5 * free / per_image))
    return min(MAX_AUTO_BATCH, 1 << (fits.bit_length() - 1))
