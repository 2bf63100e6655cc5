"""Reading RGB images from disk, robustly: one function for encoding and evaluation alike; and the pixel conversions.

Whatever the file holds (EXIF-rotated JPEG, RGBA or palette PNG, grayscale, CMYK, 16-bit), the
result is an RGB float tensor in [-1, 1]; files that are not images, truncated, or decompression
bombs raise a ValueError that names the file, so a batch reader can report and skip them.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")  # a GIF: its first frame
# the largest picture a resize may produce before the centre crop, as a multiple of size x size:
# a 1x12000 image at size 256 would become 256x3072000 (3.8 GB for 129 bytes of file)
MAX_RESIZE_AREA = 64


# The pixel conversions: networks see [-1, 1], PNGs hold uint8, some backbones want [0, 1]. Nothing else rescales pixels.
def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 on the same device, same layout: the values a PNG of the image holds."""
    return x.float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [-1, 1] on the same device."""
    return x.float().div(127.5).sub(1)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return x.add(1).div(2)


def from_unit(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x.mul(2).sub(1)


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root``, recursively, sorted; symlinked folders are not followed (no loops)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{str(root)!r} is not a folder of images")
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        found += [Path(folder) / f for f in files if f.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(found)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Transparent pixels are composited on white, as viewers show them."""
    if img.mode == "F":
        # 32-bit float (TIFF): convert("L") would clip [0, 1] data to black; scale [0, 1] (or [0, max]) to 8 bits
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError("32-bit float image with NaN or Inf pixels")
        a = a * 255.0 if a.min() >= 0 and a.max() <= 1 else (a - a.min()) / max(a.max() - a.min(), 1e-12) * 255.0
        img = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: PIL's convert("L") clips instead of scaling, so scale by the maximum
        # the container can hold (16-bit PNGs and TIFFs both arrive here).
        a = np.asarray(img, dtype=np.float64)
        a = a / 257.0 if a.max() <= 65535 else a / a.max() * 255.0
        img = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")  # palettes may carry transparency
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Scale the shorter side to ``size`` (bicubic, antialiased) and cut the centre square."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if new_w * new_h > MAX_RESIZE_AREA * size * size:
        raise ValueError(f"{w}x{h} pixels would be resized to {new_w}x{new_h} before the centre crop (aspect ratio over "
                         f"{MAX_RESIZE_AREA}:1); crop it to a less elongated picture first")
    img = img.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def read_rgb(path: str | os.PathLike, size: int | None) -> torch.Tensor:
    """(3, size, size) float32 in [-1, 1]: EXIF-upright, RGB, shorter side resized, centre-cropped.

    ``size=None`` keeps the image as it is, (3, H, W) (e.g. for metrics on full images).

    Raises ValueError naming ``path`` for non-images, truncated files and decompression bombs.
    """
    return from_uint8(read_uint8(path, size))


def read_uint8(path: str | os.PathLike, size: int | None) -> torch.Tensor:
    """:func:`read_rgb` as the uint8 pixels the file decodes to: ``(3, size, size)``."""
    if not os.path.isfile(path):  # a FIFO named x.jpg would block open() forever; a socket, a device, a dangling link
        raise ValueError(f"{path}: not a regular file (a FIFO, device or dangling link?); skipped")
    try:
        with Image.open(path) as img:
            # Pillow raises DecompressionBombError only above 2x MAX_IMAGE_PIXELS and merely warns
            # between 1x and 2x; refuse both (a warnings filter would not be thread-safe here)
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.width * img.height > limit:
                raise Image.DecompressionBombError(f"{img.width}x{img.height} pixels > Image.MAX_IMAGE_PIXELS={limit}")
            img.load()  # decode now: truncated files fail here, not later
            img = _to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError as e:
        raise ValueError(
            f"{path}: refused as a possible decompression bomb ({e}); if the image is genuine, "
            "downscale it first or raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from e
    except Exception as e:  # Pillow's decoders raise many types on corrupt input (OSError, SyntaxError, struct.error, ...)
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    if size is not None:
        try:
            img = _resize_center_crop(img, size)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)  # (3, size, size)


def read_batch(
    paths: list[Path], size: int, workers: int = 4, uint8: bool = False
) -> tuple[torch.Tensor | None, list[Path], list[tuple[Path, str]]]:
    """Read ``paths`` in a thread pool (PIL decodes outside the GIL).

    Returns ``(images (N, 3, size, size) or None if none could be read, the N paths read,
    [(path, error message), ...] for the rest)``: a corrupt file is reported, never fatal.
    Images are float in [-1, 1], or with ``uint8`` the decoded pixels (4x less memory, no rounding).
    """

    def read(path: Path) -> torch.Tensor | str:
        try:
            return read_uint8(path, size) if uint8 else read_rgb(path, size)
        except ValueError as e:
            return str(e)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(read, paths))
    ok = [(p, r) for p, r in zip(paths, results) if isinstance(r, torch.Tensor)]
    errors = [(p, r) for p, r in zip(paths, results) if isinstance(r, str)]
    images = torch.stack([r for _, r in ok]) if ok else None
    return images, [p for p, _ in ok], errors
