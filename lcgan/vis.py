"""Training pictures: a fixed batch, one row per sample, columns A, G(A), B, F(B)."""
from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from lcgan.checkpoint import atomic_write_bytes


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8 on the CPU."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def grid(columns: list[torch.Tensor], pad: int = 2) -> Image.Image:
    """Images ``(B, 3, H, W)`` in [-1, 1], one tensor per column -> one PIL image, white gaps."""
    cols = [to_uint8(c) for c in columns]
    b, h, w, _ = cols[0].shape
    canvas = torch.full((b * (h + pad) + pad, len(cols) * (w + pad) + pad, 3), 255, dtype=torch.uint8)
    for j, col in enumerate(cols):
        for i in range(b):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = col[i]
    return Image.fromarray(canvas.numpy())


def save_png(image: Image.Image, path: str | Path) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
