"""The VAE backends through the real conf/vae configs: real weights from ../shared, tiny random ones otherwise."""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from lcgan import taesd
from lcgan.images import read_rgb
from lcgan.latents import Convention, LatentSpace, check_channels
from lcgan.vae import SD15_HUB_ID
from tests.shared import shared_images, shared_path

CONF = Path(__file__).resolve().parents[1] / "conf"
VAELIGHT = "weights/vaelight"

# Thresholds on the mean PSNR of the three test images, measured at 256x256 through
# lcgan.images.read_rgb (bicubic, centre crop): 4-5 dB below what the real weights give (so CPU/library
# numerics cannot trip them) and 10+ dB above weights without learned structure (so a broken
# architecture, weight loading or pixel range does; the latent std checks below catch scaling):
#   TAEF2:    test images (kodim01, kodim02, first AFHQ cat) 27.3 / 31.7 / 34.1 dB, mean 31.0;
#             kodim01-08 25.1-33.0 (mean 29.3); random init 6.9 dB. README: 26.7-32.7 dB on 496 crops.
#   vaelight: test images 22.0 / 24.1 / 25.7 dB, mean 24.0; kodim01-08 18.2-26.2 (mean 22.7);
#             each weight tensor shuffled 12.5 dB. README: 20-25 dB.
TAEF2_MIN_PSNR = 26.0  # mean over the test images
VAELIGHT_MIN_PSNR = 20.0


def vae_cfg(*overrides: str) -> DictConfig:
    """``cfg.vae`` of the real encode config, composed with ``overrides``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("encode", overrides=["input_dir=unused", "output_dir=unused", *overrides]).vae


@contextmanager
def raises(exc: type[Exception], match: str):
    """Like pytest.raises, for the error a backend raised inside hydra's instantiate (which wraps it)."""
    with pytest.raises(InstantiationException) as info:
        yield
    cause = info.value.__cause__
    assert isinstance(cause, exc), repr(cause)
    assert re.search(match, str(cause)), str(cause)


def photos(size: int = 256) -> torch.Tensor:
    files = shared_images("data/kodak24", limit=2) + shared_images("data/afhq_stargan_v2/cat", limit=1)
    return torch.stack([read_rgb(f, size) for f in files])


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = (x - y).square().mean(dim=(1, 2, 3))
    return float((10 * torch.log10(4 / mse)).mean())


# --- TAESD family --------------------------------------------------------------------------------


@pytest.mark.slow
def test_taef2_release_files_load_and_reconstruct_photographs():
    folder = shared_path("weights/taef2")
    sd = torch.load(folder / "taef2_encoder.pth", weights_only=True)
    assert taesd.infer_options(sd, "encoder") == {"latent_channels": 32, "use_midblock_gn": True}
    vae = instantiate(vae_cfg("vae=taef2", f"vae.model_name_or_path={folder}"), device="cpu")
    assert vae.space == LatentSpace(channels=32, scaling_factor=1.0, shift_factor=0.0, downsample=8)
    x = photos()
    z = vae.encode(x)
    assert z.shape == (3, 32, 32, 32) and z.dtype == torch.float32
    assert 0.5 < float(z.std()) < 1.5  # README: std ~0.86 on Kodak, i.e. native latents are used as raw
    y = vae.decode(z)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    trained = psnr(x, y)
    assert trained > TAEF2_MIN_PSNR, trained

    torch.manual_seed(0)  # same architecture, random weights: the threshold must reject it (one image is plenty)
    vae.encoder, vae.decoder = taesd.Encoder(32, True).eval(), taesd.Decoder(32, True).eval()
    random = psnr(x[:1], vae.decode(vae.encode(x[:1])))
    assert random < TAEF2_MIN_PSNR - 10, random


def test_taesd_release_convention_and_folder_search(tmp_path):
    """An SD1.x-style release pair (4 channels, no midblock GN): raw = native / 0.18215, images [0, 1] inside."""
    torch.manual_seed(0)
    enc, dec = taesd.Encoder(4), taesd.Decoder(4)
    torch.save(enc.half().state_dict(), tmp_path / "taesd_encoder.pth")  # fp16 like the releases
    torch.save(dec.half().state_dict(), tmp_path / "taesd_decoder.pth")
    vae = instantiate(vae_cfg("vae=taesd", f"vae.model_name_or_path={tmp_path}"), device="cpu")
    assert vae.space.channels == 4 and vae.space.scaling_factor == pytest.approx(0.18215)
    assert not hasattr(vae.encoder[11], "pool")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = vae.encode(x)
    native = enc.float()((x + 1) / 2)
    torch.testing.assert_close(z * 0.18215, native, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(vae.decode(z), (dec.float()(native) * 2 - 1).clamp(-1, 1), rtol=1e-4, atol=1e-4)
    assert vae.describe()["encoder_path"].endswith("taesd_encoder.pth")


def test_taesd_config_loads_a_diffusers_autoencoder_tiny_folder(tmp_path):
    """The diffusers format (madebyollin/taesd on the hub): its latents are TAESD's scaled ones too."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    tiny = diffusers.AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                                     num_encoder_blocks=(1,) * 4, num_decoder_blocks=(1,) * 4)
    tiny.save_pretrained(tmp_path)
    vae = instantiate(vae_cfg("vae=taesd", f"vae.model_name_or_path={tmp_path}", "vae.local_files_only=true"), device="cpu")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (2, 4, 2, 2) and vae.space.scaling_factor == pytest.approx(0.18215)
    torch.testing.assert_close(z * 0.18215, tiny.encode(x).latents)  # its config says scaling 1.0: not used
    torch.testing.assert_close(vae.decode(z), tiny.decode(z * 0.18215).sample.clamp(-1, 1))


def test_taesd_errors_name_the_key(tmp_path):
    with raises(FileNotFoundError, r"vae\.encoder_path="):
        instantiate(vae_cfg("vae=taesd", f"vae.encoder_path={tmp_path}/no_encoder.pth",
                            f"vae.decoder_path={tmp_path}/no_decoder.pth"), device="cpu")
    with raises(ValueError, "vae.model_name_or_path"):
        instantiate(vae_cfg("vae=taesd"), device="cpu")
    # a state dict of something else (diffusers naming) is refused with the keys it has
    torch.save({"layers.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "x_encoder.pth")
    torch.save(taesd.Decoder(4).state_dict(), tmp_path / "x_decoder.pth")
    with raises(ValueError, "not a TAESD-family encoder"):
        instantiate(vae_cfg("vae=taesd", f"vae.model_name_or_path={tmp_path}"), device="cpu")
    # a TAEF2 encoder with an SD decoder: two latent spaces
    torch.save(taesd.Encoder(32, True).state_dict(), tmp_path / "x_encoder.pth")
    with raises(ValueError, "different latent spaces"):
        instantiate(vae_cfg("vae=taesd", f"vae.model_name_or_path={tmp_path}"), device="cpu")


# --- ONNX ------------------------------------------------------------------------------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _fields(buf: bytes, start: int, end: int):
    """(field number, value start, value end) of the protobuf message in ``buf[start:end]``."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            j = _varint(buf, i)[1]
        elif wire == 2:
            n, i = _varint(buf, i)
            j = i + n
        else:
            j = i + {1: 8, 5: 4}[wire]
        yield key >> 3, i, j
        i = j


def shuffled_onnx(src: Path, dst: Path) -> int:
    """Copy of an ONNX model with each float initializer's values permuted: the same architecture and
    weight statistics, no learned structure (the ``onnx`` package is not a dependency, so the
    protobuf is walked by hand: ModelProto.graph=7, GraphProto.initializer=5, TensorProto
    data_type=2 (1=float), raw_data=9; equal byte lengths keep the file valid)."""
    buf, rng, n = bytearray(src.read_bytes()), np.random.default_rng(0), 0
    for field, s, e in list(_fields(buf, 0, len(buf))):
        for gfield, gs, ge in list(_fields(buf, s, e)) if field == 7 else []:
            tensor = {f: (ts, te) for f, ts, te in _fields(buf, gs, ge)} if gfield == 5 else {}
            if 9 in tensor and 2 in tensor and _varint(buf, tensor[2][0])[0] == 1:
                ts, te = tensor[9]
                buf[ts:te] = rng.permutation(np.frombuffer(bytes(buf[ts:te]), dtype=np.float32)).tobytes()
                n += 1
    dst.write_bytes(bytes(buf))
    return n


def test_vaelight_onnx_reconstructs_photographs_and_shuffled_weights_do_not(tmp_path):
    pytest.importorskip("onnxruntime", reason="vae=onnx needs onnxruntime (pip install onnxruntime)")
    enc, dec = shared_path(f"{VAELIGHT}/VAEencoder.onnx"), shared_path(f"{VAELIGHT}/VAEpreview.onnx")
    cfg = vae_cfg("vae=vaelight", f"vae.encoder_path={enc}", f"vae.decoder_path={dec}")
    vae = instantiate(cfg, device="cpu")
    assert vae.space.channels == 4 and vae.space.scaling_factor == pytest.approx(0.18215)
    x = photos()
    z = vae.encode(x)
    assert z.shape == (3, 4, 32, 32)
    assert 2.5 < float(z.std(dim=(0, 2, 3)).mean()) < 7  # raw SD latents (README: std 3.7-5.4), not x0.18215
    trained = psnr(x, vae.decode(z))
    assert trained > VAELIGHT_MIN_PSNR, trained

    assert shuffled_onnx(enc, tmp_path / "enc.onnx") > 10 and shuffled_onnx(dec, tmp_path / "dec.onnx") > 10
    shuffled = instantiate(cfg, device="cpu", encoder_path=str(tmp_path / "enc.onnx"), decoder_path=str(tmp_path / "dec.onnx"))
    random = psnr(x, shuffled.decode(shuffled.encode(x)))
    assert random < VAELIGHT_MIN_PSNR - 3, random


def test_onnx_layout_options_and_errors(tmp_path):
    pytest.importorskip("onnxruntime", reason="vae=onnx needs onnxruntime (pip install onnxruntime)")
    enc, dec = shared_path(f"{VAELIGHT}/VAEencoder.onnx"), shared_path(f"{VAELIGHT}/VAEpreview.onnx")
    for part, src in (("vae_encoder", enc), ("vae_decoder", dec)):  # diffusers' ONNX export layout
        (tmp_path / part).mkdir()
        (tmp_path / part / "model.onnx").symlink_to(src)
    base = ("vae=onnx", f"vae.model_name_or_path={tmp_path}")
    vae = instantiate(vae_cfg(*base, "vae.sum_decoder_outputs=true"), device="cpu")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (1, 4, 4, 4) and vae.decode(z).shape == (1, 3, 32, 32)
    # latents_out_scaled: the same encoder declared as emitting scaled latents gives raw = out / sf
    scaled = instantiate(vae_cfg(*base, "vae.sum_decoder_outputs=true", "vae.latents_out_scaled=true"), device="cpu")
    torch.testing.assert_close(scaled.encode(x), z / 0.18215)
    torch.testing.assert_close(scaled.decode(scaled.encode(x)), vae.decode(z), rtol=1e-4, atol=1e-4)
    with raises(ValueError, "sum_decoder_outputs=true"):
        instantiate(vae_cfg(*base), device="cpu")  # 4 outputs, not summed: refuse rather than decode garbage
    with raises(ValueError, "vae.channels=16"):
        instantiate(vae_cfg(*base, "vae.sum_decoder_outputs=true", "vae.channels=16"), device="cpu")
    with raises(FileNotFoundError, r"vae\.decoder_path="):
        instantiate(vae_cfg("vae=onnx", f"vae.encoder_path={enc}", f"vae.decoder_path={tmp_path}/nope.onnx"), device="cpu")
    with pytest.raises(Exception, match="encoder_path"):  # vaelight's paths are mandatory (???)
        instantiate(vae_cfg("vae=vaelight"), device="cpu")


# --- diffusers AutoencoderKL (vae=sd15) ------------------------------------------------------------


def test_sd15_config_loads_a_local_autoencoder_kl(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    tiny = diffusers.AutoencoderKL(
        block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4, layers_per_block=1,
        scaling_factor=0.5,  # not SD's 0.18215: proves the value is read from the model config
    )
    tiny.save_pretrained(tmp_path / "vae")
    cfg = vae_cfg("vae=sd15", f"vae.model_name_or_path={tmp_path / 'vae'}", "vae.subfolder=null", "vae.local_files_only=true")
    vae = instantiate(cfg, device="cpu")
    assert vae.space == LatentSpace(channels=4, scaling_factor=0.5, shift_factor=0.0, downsample=8)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (2, 4, 4, 4) and z.dtype == torch.float32
    torch.testing.assert_close(z, vae.encode(x))  # posterior mean: deterministic
    y = vae.decode(z)
    assert y.shape == (2, 3, 32, 32) and y.min() >= -1 and y.max() <= 1
    assert not any(p.requires_grad for p in vae.vae.parameters()) and not vae.vae.training
    assert vae.describe()["model_name_or_path"] == str(tmp_path / "vae")
    # the same folder through subfolder=vae, with an explicit scaling factor
    vae = instantiate(vae_cfg("vae=sd15", f"vae.model_name_or_path={tmp_path}", "vae.scaling_factor=0.25"), device="cpu")
    assert vae.space.scaling_factor == 0.25


def test_sd15_missing_weights_error_says_what_to_set(tmp_path):
    pytest.importorskip("diffusers")
    cfg = vae_cfg("vae=sd15", f"vae.model_name_or_path={tmp_path / 'missing'}", "vae.local_files_only=true")
    with pytest.raises(InstantiationException) as info:
        instantiate(cfg, device="cpu")
    error = info.value.__cause__
    assert isinstance(error, FileNotFoundError)
    assert re.search(r"vae\.model_name_or_path=.*vae\.subfolder=.*save_pretrained.*HF_HOME", str(error)), str(error)
    assert error.__cause__ is not None  # diffusers' own error is chained for debugging


def test_sd15_default_is_the_maintained_hub_mirror(tmp_path):
    """The runwayml repo was withdrawn: the default and the error's download command name its mirror."""
    pytest.importorskip("diffusers")
    cfg = vae_cfg()  # encode's default vae group is sd15
    assert (cfg.model_name_or_path, cfg.subfolder) == (SD15_HUB_ID, "vae") == ("stable-diffusion-v1-5/stable-diffusion-v1-5", "vae")
    # an empty cache and no network: the error names the setting and the download command for the mirror
    with raises(FileNotFoundError, match=r"vae\.model_name_or_path='stable-diffusion-v1-5/stable-diffusion-v1-5'.*"
                r"hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include 'vae/\*'"):
        instantiate(vae_cfg(f"vae.cache_dir={tmp_path}", "vae.local_files_only=true"), device="cpu")
    # old checkpoints name the withdrawn id: loaded from the mirror, with a warning saying so
    with pytest.warns(UserWarning, match="withdrawn"), raises(FileNotFoundError, match="stable-diffusion-v1-5/stable-diffusion-v1-5"):
        instantiate(vae_cfg("vae.model_name_or_path=runwayml/stable-diffusion-v1-5", f"vae.cache_dir={tmp_path}",
                            "vae.local_files_only=true"), device="cpu")


def test_every_vae_config_composes():
    for name in sorted(p.stem for p in (CONF / "vae").glob("*.yaml")):
        cfg = vae_cfg(f"vae={name}")
        assert cfg._target_.startswith("lcgan.vae."), name
        assert "device" not in cfg or cfg.device == "cpu", name  # callers pass device
    assert vae_cfg("vae=sdxl").subfolder is None and vae_cfg("vae=taef2").scaling_factor == 1.0


# --- scaling conventions ---------------------------------------------------------------------------


@pytest.mark.parametrize("latents_scaled", [False, True])
def test_convention_round_trips_match_hand_computation(latents_scaled):
    space = LatentSpace(channels=4, scaling_factor=0.18215, shift_factor=0.1)
    convention = Convention(latents_scaled=latents_scaled, latent_divisor=10)
    raw = torch.randn(2, 4, 8, 8) * 5
    file = (raw - 0.1) * 0.18215 if latents_scaled else raw
    torch.testing.assert_close(convention.raw_to_file(raw, space), file)
    torch.testing.assert_close(convention.raw_to_model(raw, space), file / 10)
    torch.testing.assert_close(convention.file_to_raw(file, space), raw, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(convention.model_to_raw(file / 10, space), raw, rtol=1e-5, atol=1e-5)


def test_latent_space_mismatch_is_a_clear_error():
    from lcgan.vae import ApproxVAE

    z_flux2 = torch.zeros(1, 32, 8, 8)
    with pytest.raises(ValueError, match="32-channel latents.*4 channels.*vae="):
        check_channels(z_flux2.shape[1], ApproxVAE().space, "data.a_dir")
