"""python -m lcgan.encode on a folder of mixed, partly broken images; manifests; latent statistics."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from lcgan import latent_stats
from lcgan.encode import encode
from lcgan.latent_files import check_manifests, read_manifest
from tests.shared import shared_path

ROOT = Path(__file__).resolve().parents[1]
GOOD = ["rgb.jpg", "sub/rgba.png", "sub/gray.png", "sub/deep/sixteen.png", "palette.png", "cmyk.jpg", "rotated.jpg", "big.bmp"]
BAD = ["text.jpg", "sub/truncated.jpg"]


def encode_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("encode", overrides=["device=cpu", "batch_size=3", "num_workers=2", *overrides])


def vae_overrides(name: str) -> list[str]:
    if name == "approx":
        return ["vae=approx"]
    enc, dec = shared_path("weights/vaelight/VAEencoder.onnx"), shared_path("weights/vaelight/VAEpreview.onnx")
    pytest.importorskip("onnxruntime", reason="vae=vaelight needs onnxruntime (pip install onnxruntime)")
    return ["vae=vaelight", f"vae.encoder_path={enc}", f"vae.decoder_path={dec}"]


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Every image mode we expect in the wild, plus a text file named .jpg and a truncated JPEG."""
    root = tmp_path / "images"
    for rel in GOOD + BAD:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8))
    photo.save(root / "rgb.jpg", quality=90)
    photo.convert("RGBA").save(root / "sub/rgba.png")
    photo.convert("L").save(root / "sub/gray.png")
    Image.fromarray(rng.integers(0, 65536, (70, 70), dtype=np.uint16)).save(root / "sub/deep/sixteen.png")
    photo.quantize(16).save(root / "palette.png")
    photo.convert("CMYK").save(root / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 8
    photo.save(root / "rotated.jpg", exif=exif)
    photo.resize((300, 200)).save(root / "big.bmp")
    (root / "text.jpg").write_text("this is not a JPEG")
    (root / "sub/truncated.jpg").write_bytes((root / "rgb.jpg").read_bytes()[:500])
    (root / "notes.txt").write_text("ignored: not an image suffix")
    return root


@pytest.mark.parametrize("vae", ["approx", "vaelight"])
def test_encode_mixed_folder_skips_bad_files_and_resumes(mixed_folder, tmp_path, vae):
    out = tmp_path / "latents"
    cfg = encode_cfg(*vae_overrides(vae), f"input_dir={mixed_folder}", f"output_dir={out}", "image_size=64")
    result = encode(cfg)
    assert result["written"] == len(GOOD)
    assert sorted(f["path"] for f in result["failed"]) == sorted(BAD)
    for rel in GOOD:
        z = torch.load(out / Path(rel).with_suffix(".pt"), weights_only=True)
        assert type(z) is torch.Tensor and z.shape == (4, 8, 8) and z.dtype == torch.float32, rel
        assert torch.isfinite(z).all()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.pt")) == sorted(
        Path(r).with_suffix(".pt").as_posix() for r in GOOD
    )
    assert not list(out.rglob("*.tmp"))

    manifest = read_manifest(out)
    assert manifest["count"] == len(GOOD) and manifest["image_size"] == 64 and manifest["latents_scaled"] is False
    assert manifest["latent_space"]["channels"] == 4 and manifest["latent_shape"] == [4, 8, 8]
    assert manifest["vae"]["class"] == {"approx": "ApproxVAE", "vaelight": "OnnxVAE"}[vae]
    assert manifest["source_dir"] == str(mixed_folder.resolve())
    assert sorted(f["path"] for f in manifest["failed"]) == sorted(BAD)
    everything = torch.stack([torch.load(p, weights_only=True) for p in sorted(out.rglob("*.pt"))])
    np.testing.assert_allclose(manifest["stats_raw"]["mean"], everything.mean(dim=(0, 2, 3)), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(manifest["stats_raw"]["std"], everything.std(dim=(0, 2, 3)), rtol=1e-2, atol=1e-3)

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    again = encode(cfg)  # a rerun writes nothing new, and still reports the broken files
    assert again["written"] == 0 and again["skipped_existing"] == len(GOOD) and len(again["failed"]) == len(BAD)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == mtimes
    (out / "cmyk.pt").unlink()  # an interrupted run: only the missing latent is encoded
    assert encode(cfg)["written"] == 1 and read_manifest(out)["count"] == len(GOOD)


@pytest.mark.slow
def test_encode_scaled_flipped_and_errors(mixed_folder, tmp_path):
    common = ["vae=approx", f"input_dir={mixed_folder}", "image_size=64"]
    raw_dir, scaled_dir = tmp_path / "raw", tmp_path / "scaled"
    encode(encode_cfg(*common, f"output_dir={raw_dir}", "flip_copies=true"))
    encode(encode_cfg(*common, f"output_dir={scaled_dir}", "latents_scaled=true"))
    raw = torch.load(raw_dir / "rgb.pt", weights_only=True)
    scaled = torch.load(scaled_dir / "rgb.pt", weights_only=True)
    torch.testing.assert_close(scaled, raw * 0.18215)  # file space = (raw - 0) * scaling_factor
    assert read_manifest(scaled_dir)["latents_scaled"] is True
    # the approx encoder (8x8 means, then linear) commutes with flips, so the flipped copy is exactly this
    torch.testing.assert_close(torch.load(raw_dir / "rgb_flip.pt", weights_only=True), raw.flip(-1))
    assert read_manifest(raw_dir)["files"] == 2 * len(GOOD)

    with pytest.raises(ValueError, match="text.jpg|truncated.jpg"):
        encode(encode_cfg(*common, f"output_dir={tmp_path / 'stop'}", "on_error=stop"))
    with pytest.raises(ValueError, match="image_size=60 must be a multiple of .* 8"):
        encode(encode_cfg("vae=approx", f"input_dir={mixed_folder}", f"output_dir={tmp_path / 'x'}", "image_size=60"))
    with pytest.raises(ValueError, match="latents_scaled"):  # resuming into a folder of other latents
        encode(encode_cfg(*common, f"output_dir={raw_dir}", "latents_scaled=true"))
    with pytest.raises(ValueError, match="sample_posterior"):
        encode(encode_cfg(*common, f"output_dir={tmp_path / 'y'}", "sample_posterior=true"))
    (mixed_folder / "rgb.png").write_bytes((mixed_folder / "sub/rgba.png").read_bytes())
    with pytest.raises(ValueError, match="rgb.pt"):  # rgb.jpg and rgb.png would share one output
        encode(encode_cfg(*common, f"output_dir={tmp_path / 'z'}"))


def test_check_manifests_refuses_disagreeing_folders():
    sd = {"channels": 4, "scaling_factor": 0.18215, "shift_factor": 0.0, "downsample": 8}
    a = {"dir": "lat/a", "latent_space": sd, "latents_scaled": False, "image_size": 256}
    check_manifests(a, dict(a, dir="lat/b"), latents_scaled=False, channels=4)
    check_manifests(a, None, latents_scaled=False, channels=4)  # a folder without manifest cannot be checked
    flux2 = dict(a, dir="lat/b", latent_space=dict(sd, channels=32, scaling_factor=1.0))
    with pytest.raises(ValueError, match=r"latent_space: 'lat/a' has .*'lat/b' has .*'channels': 32"):
        check_manifests(a, flux2, latents_scaled=False)
    with pytest.raises(ValueError, match="image_size: 'lat/a' has 256, 'lat/b' has 512"):
        check_manifests(a, dict(a, dir="lat/b", image_size=512), latents_scaled=False)
    with pytest.raises(ValueError, match="'lat/a' was encoded with latents_scaled=False .* training config has latents_scaled=True"):
        check_manifests(a, dict(a, dir="lat/b"), latents_scaled=True)
    with pytest.raises(ValueError, match="4-channel latents but the training config expects 16"):
        check_manifests(a, None, latents_scaled=False, channels=16)


def test_latent_stats_table_json_and_suggested_divisor(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    (tmp_path / "lat" / "sub").mkdir(parents=True)
    std = torch.tensor([1.0, 2.0, 4.0, 0.5]).view(4, 1, 1)
    for i in range(6):
        z = torch.randn(4, 16, 16, generator=g) * std + torch.tensor([0.0, 1.0, -1.0, 0.0]).view(4, 1, 1)
        obj = [z, z[None], {"latent": z, "source": "x.png"}][i % 3]  # the three accepted file forms
        torch.save(obj, tmp_path / "lat" / ("sub" if i % 2 else "") / f"{i}.pt")
    stats = latent_stats.main([str(tmp_path / "lat"), "--json", str(tmp_path / "s.json")])[0]
    assert stats["files"] == 6 and stats["channels"] == 4
    np.testing.assert_allclose(stats["std"], [1, 2, 4, 0.5], rtol=0.1)
    np.testing.assert_allclose(stats["mean"], [0, 1, -1, 0], atol=0.2)
    # channel 2 has std 4: about 21% of all values are beyond +-5 (|z|>5), about 0.3% beyond +-10
    assert 0.01 < stats["fraction_beyond_1"]["5"] < 0.1 and stats["fraction_beyond_1"]["10"] <= 0.01
    assert stats["suggested_divisor"] == 10
    assert "suggested latent_divisor: 10" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())[0]["suggested_divisor"] == 10
    (tmp_path / "bad").mkdir()
    torch.save(torch.zeros(2, 4, 8, 8), tmp_path / "bad" / "batch.pt")
    with pytest.raises(ValueError, match=r"batch.pt has shape \[2, 4, 8, 8\]"):
        latent_stats.folder_stats(tmp_path / "bad")

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .pt latents; encode images first"):
        latent_stats.folder_stats(tmp_path / "empty")


@pytest.mark.slow
def test_cli_exact_interface(mixed_folder, tmp_path):
    """The documented command line, through hydra.main, in a fresh process."""
    enc, dec = shared_path("weights/vaelight/VAEencoder.onnx"), shared_path("weights/vaelight/VAEpreview.onnx")
    pytest.importorskip("onnxruntime", reason="vae=onnx needs onnxruntime (pip install onnxruntime)")
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "lcgan.encode", "vae=onnx", f"vae.encoder_path={enc}", f"vae.decoder_path={dec}",
           "vae.sum_decoder_outputs=true", f"input_dir={mixed_folder}", f"output_dir={out}", "image_size=64",
           "device=cpu", f"hydra.run.dir={tmp_path / 'hydra'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_manifest(out)["count"] == len(GOOD)
    assert "2 unreadable images skipped" in proc.stderr + proc.stdout
