"""Pictures: image grids with their column labels (and notes) drawn in, written atomically as PNG."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lcgan.checkpoint import atomic_write_bytes
from lcgan.images import to_uint8

LINE = 14  # px per line of text: PIL's default font is ~11 px high


def grid(columns: list[torch.Tensor], labels: list[str] | None = None, pad: int = 2) -> Image.Image:
    """Images ``(B, 3, H, W)``, one tensor per column -> one PIL image, white gaps, ``labels`` above the columns.

    Columns are floats in [-1, 1] or uint8.
    """
    cols = [(c if c.dtype == torch.uint8 else to_uint8(c)).permute(0, 2, 3, 1).cpu() for c in columns]  # (B, H, W, 3)
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


def read_png(path: Path) -> torch.Tensor:
    """(3, H, W) uint8 of a PNG that lcgan wrote."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def save_comparison(sources: torch.Tensor, names: list[str], folders: list[Path], labels: list[str], lines: list[str],
                    path: Path, table: list[tuple[str, ...]] | None = None) -> None:
    """One row per image: the uint8 ``sources`` ``(B, 3, H, W)`` and each folder's ``{name}.png`` beside them, the
    columns labelled; under it an optional ``table`` (one row of cells per line) and the notes ``lines``."""
    columns = [sources, *(torch.stack([read_png(folder / f"{name}.png") for name in names]) for folder in folders)]
    image = grid(columns, labels)
    if table:
        canvas = Image.new("RGB", (image.width, image.height + len(table) * LINE + 6), "white")
        canvas.paste(image, (0, 0))
        draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
        col_x = (4, image.width // 2, image.width * 3 // 4)  # the first cell gets half the width: it may say "(random net)"
        for r, cells in enumerate(table):
            for x, text in zip(col_x, cells):
                draw.text((x, image.height + 4 + r * LINE), text, fill="black", font=font)
        image = canvas
    save_png(with_notes(image, lines), path)


@torch.no_grad()
def translation_grid(g_ab, g_ba, vae, convention, real_a: torch.Tensor, real_b: torch.Tensor) -> Image.Image:
    """Columns A, G(A), B, F(B), labelled, decoded through the configured VAE."""
    decode = lambda z: vae.decode(convention.model_to_raw(z.float(), vae.space))  # noqa: E731
    return grid([decode(real_a), decode(g_ab(real_a)), decode(real_b), decode(g_ba(real_b))], labels=["A", "G(A)", "B", "F(B)"])
