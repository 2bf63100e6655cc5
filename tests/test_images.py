"""read_rgb on every image mode we meet in the wild, and the errors for files that are not images."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from lcgan.images import list_images, read_batch, read_rgb

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def halves(size=(40, 20), left=RED, right=BLUE) -> Image.Image:
    """Left half ``left``, right half ``right``."""
    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img


def rgb_at(x: torch.Tensor, row: int, col: int) -> tuple[float, ...]:
    return tuple(round(v, 2) for v in x[:, row, col].tolist())


def test_plain_jpg_shape_range_and_crop(tmp_path):
    path = tmp_path / "a.jpg"
    halves((64, 32)).save(path, quality=95)
    x = read_rgb(path, 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    # centre crop of a 32x16 resize: columns 8..24 of red|blue, so red on the left, blue on the right
    assert x[0, 8, 1] > 0.8 and x[2, 8, 1] < -0.8
    assert x[2, 8, 14] > 0.8 and x[0, 8, 14] < -0.8
    assert read_rgb(path, None).shape == (3, 32, 64)  # size=None: as stored


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation "rotate 90 CW to display": the stored left edge becomes the top
    halves((40, 20)).save(path, exif=exif, quality=95)
    x = read_rgb(path, 16)
    # upright: red on top, blue below; without the transpose each row would be half red, half blue
    assert x[0, 0].mean() > 0.8 and x[2, 0].mean() < -0.8
    assert x[2, 15].mean() > 0.8 and x[0, 15].mean() < -0.8


def test_rgba_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # transparent black must read as white
    img.paste((255, 0, 0, 255), (0, 0, 8, 16))
    img.save(tmp_path / "a.png")
    x = read_rgb(tmp_path / "a.png", 16)
    assert rgb_at(x, 4, 2) == (1.0, -1.0, -1.0)
    assert rgb_at(x, 4, 13) == (1.0, 1.0, 1.0)


def test_palette_with_transparency_png_and_gif(tmp_path):
    img = halves((16, 16)).quantize(colors=2)
    index_of_blue = img.getpixel((15, 0))
    img.save(tmp_path / "p.png", transparency=index_of_blue)
    img.save(tmp_path / "p.gif", transparency=index_of_blue)
    for name in ("p.png", "p.gif"):
        x = read_rgb(tmp_path / name, 16)
        assert rgb_at(x, 4, 2) == (1.0, -1.0, -1.0), name  # red stays red
        assert rgb_at(x, 4, 13) == (1.0, 1.0, 1.0), name  # transparent blue -> white


def test_grayscale_cmyk_and_16_bit(tmp_path):
    Image.new("L", (16, 16), 0).save(tmp_path / "gray.png")
    assert torch.allclose(read_rgb(tmp_path / "gray.png", 16), torch.tensor(-1.0))
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # pure red in CMYK
    r, g, b = read_rgb(tmp_path / "cmyk.jpg", 16).mean(dim=(1, 2)).tolist()
    assert r > 0.8 and g < -0.8 and b < -0.8
    # 16-bit: 65535 is white, 0 black and 32768 mid-grey; clipping to 8 bits would make all three white
    a = np.zeros((16, 48), dtype=np.uint16)
    a[:, 16:32], a[:, 32:] = 32768, 65535
    Image.fromarray(a).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    x = read_rgb(tmp_path / "deep.png", 16)  # 16x48 -> centre crop is the mid-grey third
    assert x.abs().max() < 0.02
    a16 = np.tile(np.linspace(0, 65535, 16, dtype=np.uint16), (16, 1))
    Image.fromarray(a16).save(tmp_path / "ramp.png")
    x = read_rgb(tmp_path / "ramp.png", 16)
    assert x[0, 0, 0] < -0.98 and x[0, 0, 15] > 0.98


def test_bad_files_raise_value_error_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "text.jpg").write_text("not an image")
    good = tmp_path / "good.jpg"
    halves((64, 64)).save(good, quality=95)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:400])
    for name in ("text.jpg", "cut.jpg", "missing.png"):
        with pytest.raises(ValueError, match=name):
            read_rgb(tmp_path / name, 16)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64*64 = 4096 > 1000: between 1x and 2x and beyond
    with pytest.raises(ValueError, match="decompression bomb"):
        read_rgb(good, 16)


def test_list_images_recursive_sorted_and_symlink_loop_safe(tmp_path):
    for rel in ("b.png", "a/z.JPG", "a/y.webp", "c/d/x.tiff", "notes.txt", "a/latent.pt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a folder link back to the root
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a/y.webp", "a/z.JPG", "b.png", "c/d/x.tiff"]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        list_images(tmp_path / "nope")


def test_read_batch_reports_corrupt_files(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        halves((24, 24)).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    paths.insert(1, tmp_path / "bad.png")
    x, ok, errors = read_batch(paths, 16, workers=2)
    assert x.shape == (3, 3, 16, 16)
    assert ok == [paths[0], paths[2], paths[3]]
    assert [p for p, _ in errors] == [tmp_path / "bad.png"] and "bad.png" in errors[0][1]
    assert read_batch([tmp_path / "bad.png"], 16)[0] is None


def test_pixel_conversions_are_one_exact_pair():
    """uint8 -> [-1, 1] -> uint8 is the identity on every value, out-of-range floats saturate, and [0, 1] <-> [-1, 1] invert."""
    from lcgan.images import from_uint8, from_unit, to_uint8, to_unit

    every = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(to_uint8(from_uint8(every)), every)
    assert to_uint8(torch.tensor([-1.5, -1.0, 0.0, 1.0, 7.0])).tolist() == [0, 0, 128, 255, 255]
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    torch.testing.assert_close(from_unit(to_unit(x)), x)
    assert to_unit(torch.tensor([-1.0, 1.0])).tolist() == [0.0, 1.0]
