"""Pictures: image grids with their column labels (and notes) drawn in, written atomically as PNG."""
from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from lcgan.checkpoint import atomic_write_bytes

LINE = 14  # px per line of text: PIL's default font is ~11 px high


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8 on the CPU."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def grid(columns: list[torch.Tensor], labels: list[str] | None = None, pad: int = 2) -> Image.Image:
    """Images ``(B, 3, H, W)``, one tensor per column -> one PIL image, white gaps, ``labels`` above the columns.

    Columns are floats in [-1, 1] or uint8.
    """
    cols = [c.permute(0, 2, 3, 1).cpu() if c.dtype == torch.uint8 else to_uint8(c) for c in columns]
    b, h, w, _ = cols[0].shape
    top = LINE + pad if labels else 0
    canvas = torch.full((top + b * (h + pad) + pad, len(cols) * (w + pad) + pad, 3), 255, dtype=torch.uint8)
    for j, col in enumerate(cols):
        for i in range(b):
            y, x = top + pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = col[i]
    image = Image.fromarray(canvas.numpy())
    if labels:
        if len(labels) != len(cols):
            raise ValueError(f"{len(labels)} labels for {len(cols)} columns")
        draw, font = ImageDraw.Draw(image), ImageFont.load_default()
        for j, text in enumerate(labels):
            left = pad + j * (w + pad) + max(0, (w - draw.textlength(text, font=font)) / 2)  # centred over its column
            draw.text((left, pad), text, fill="black", font=font)
    return image


def with_notes(image: Image.Image, lines: list[str], color: str = "black") -> Image.Image:
    """``image`` with ``lines`` of text in a white band below it."""
    if not lines:
        return image
    out = Image.new("RGB", (image.width, image.height + LINE * len(lines) + 4), "white")
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    for r, text in enumerate(lines):
        draw.text((4, image.height + 2 + r * LINE), text, fill=color, font=ImageFont.load_default())
    return out


def save_png(image: Image.Image, path: str | Path) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
