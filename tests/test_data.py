"""Bad latent folders and bad configs: one clear error naming the file or key."""
from __future__ import annotations

import os

import pytest
import torch
from hydra.errors import ConfigCompositionException

from lcgan.buffer import FakeBuffer
from lcgan.config import ConfigError, check
from lcgan.data import UnpairedSampler, latent_folders
from lcgan.latent_files import load_latent_file
from tests.test_train import write_latents


def folders(tmp_path, n=4):
    return write_latents(tmp_path / "A", n), write_latents(tmp_path / "B", n, seed=1)


def test_missing_and_empty_folder(tmp_path):
    a, b = folders(tmp_path)
    with pytest.raises(FileNotFoundError, match="data.a_dir=.*nope.*is not a folder"):
        latent_folders(str(tmp_path / "nope"), str(b))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="data.b_dir=.*empty.*holds no .pt latents.*lcgan.encode"):
        latent_folders(str(a), str(tmp_path / "empty"))
    # a folder of images: encode them elsewhere, never into the user's image folder, and choose the VAE
    from PIL import Image

    (tmp_path / "photos").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "photos" / "x.png")
    with pytest.raises(ValueError, match=r"data.a_dir=.*photos.* holds 1 images, not .pt latents.*vae=<the VAE.*output_dir=latents/photos"):
        latent_folders(str(tmp_path / "photos"), str(b))


@pytest.mark.parametrize(
    "obj, match",
    [
        (torch.randn(2, 4, 8, 8), r"shape \[2, 4, 8, 8\], expected \[C,H,W\] or \[1,C,H,W\]"),
        (torch.randn(8, 8), r"shape \[8, 8\]"),
        ({"z": torch.randn(4, 8, 8)}, "dict without the key 'latent'"),
        ([1, 2, 3], "holds a list, expected a tensor"),
        (torch.ones(4, 8, 8, dtype=torch.int64), "dtype torch.int64"),
        (torch.full((4, 8, 8), float("nan")), "NaN or Inf"),
    ],
)
def test_bad_latent_file(tmp_path, obj, match):
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=match) as e:
        load_latent_file(tmp_path / "bad.pt")
    assert "bad.pt" in str(e.value)


def test_corrupt_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt is empty"):
        load_latent_file(tmp_path / "empty.pt")
    torch.save(torch.randn(4, 8, 8), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pt could not be loaded"):
        load_latent_file(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("not a tensor")
    with pytest.raises(ValueError, match="text.pt could not be loaded"):
        load_latent_file(tmp_path / "text.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    torch.save({"latent": evil}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt could not be loaded.*never unpickles"):
        load_latent_file(tmp_path / "evil.pt")
    assert not marker.exists()


def test_mixed_sizes_and_mismatched_domains(tmp_path):
    a = write_latents(tmp_path / "A", 3)
    torch.save(torch.randn(4, 32, 32), a / "big.pt")
    with pytest.raises(ValueError, match=r"mixes latent shapes .*\[4, 16, 16\].*\[4, 32, 32\].*big.pt"):
        latent_folders(str(a), str(a))
    b = write_latents(tmp_path / "B", 3, shape=(4, 8, 8))
    c = write_latents(tmp_path / "C", 3)
    with pytest.raises(ValueError, match="data.a_dir latents are .*data.b_dir latents are"):
        latent_folders(str(c), str(b))


def test_symlink_loop_is_not_followed_forever(tmp_path):
    a = write_latents(tmp_path / "A", 3)
    (a / "loop").symlink_to(a, target_is_directory=True)
    d = latent_folders(str(a), str(a))
    assert len(d.a) == 3


def test_batch_larger_than_domain(tmp_path):
    with pytest.raises(ValueError, match="train.batch_size=8 is larger than the smaller domain"):
        UnpairedSampler(torch.zeros(5, 4, 8, 8), torch.zeros(9, 4, 8, 8), 8)


def test_discriminator_targets_come_with_their_own_latents_and_flips():
    """``UnpairedSampler(..., targets=)``: each target is drawn with its latent's index and mirror flip."""
    torch.manual_seed(0)
    a, b = torch.randn(6, 4, 8, 8), torch.randn(9, 4, 8, 8)
    sampler = UnpairedSampler(a, b, 3, flip=True, targets=(a * 10, b - 5))
    order = sampler.epoch()
    for step in range(sampler.steps_per_epoch):
        real_a, real_b, target_a, target_b = sampler.batch(order, step, torch.device("cpu"))
        torch.testing.assert_close(target_a, real_a * 10)
        torch.testing.assert_close(target_b, real_b - 5)
        assert real_a.shape == (3, 4, 8, 8)
    assert len(UnpairedSampler(a, b, 3).batch(order, 0, torch.device("cpu"))) == 2  # no targets: (a, b) as before
    # each a dense tensor with the strides the step sees without targets (compiled graphs guard on strides),
    # not a channel slice of the stacked batch; channels-last domains (train.channels_last) too
    for layout in (torch.contiguous_format, torch.channels_last):
        fmt = lambda z, layout=layout: z.contiguous(memory_format=layout)  # noqa: E731
        plain = UnpairedSampler(fmt(a), fmt(b), 3).batch(order, 0, torch.device("cpu"))
        both = UnpairedSampler(fmt(a), fmt(b), 3, targets=(fmt(a * 10), fmt(b - 5))).batch(order, 0, torch.device("cpu"))
        assert [x.stride() for x in both] == [x.stride() for x in plain] * 2, layout


def test_config_errors_name_the_key(tiny_cfg):
    for override in ("optim.lrr=1", "train.batch_size=abc"):  # unknown key, wrong type: refused while composing
        with pytest.raises(ConfigCompositionException, match=override):
            tiny_cfg(override)
    for override, key in [("optim.lr=-1", "optim.lr=-1"), ("data.latent_divisor=0", "data.latent_divisor=0"),
                          ("train.fake_buffer_size=-3", "train.fake_buffer_size=-3"),
                          ("train.amp=fp8", "train.amp='fp8'"), ("data.latent_norm=batch", "data.latent_norm='batch'"),
                          ("model.discriminator.kernel=2", "model.discriminator.kernel=2"),
                          ("model.discriminator.augment=flip", "model.discriminator.augment='flip'")]:
        with pytest.raises(ConfigError, match=key.replace("(", r"\(")):
            check(tiny_cfg(override))
    with pytest.raises(ConfigError) as e:
        check(tiny_cfg("optim.lr=0", "train.epochs=0"))
    assert "optim.lr" in str(e.value) and "train.epochs" in str(e.value)


def test_fake_buffer_mixes_past_fakes():
    torch.manual_seed(0)
    buf = FakeBuffer(4)
    first = buf.query(torch.zeros(4, 1, 2, 2))  # fills the buffer
    assert torch.equal(first, torch.zeros(4, 1, 2, 2)) and buf.count == 4
    outs = torch.cat([buf.query(torch.full((4, 1, 2, 2), float(i))) for i in range(1, 50)])
    values = outs[:, 0, 0, 0]
    assert (values < torch.arange(1, 50).repeat_interleave(4)).float().mean() > 0.3  # old fakes come back


def test_fake_buffer_keeps_the_fakes_layout():
    """Channels-last fakes come back channels-last, also through a resumed NCHW store (the compiled
    discriminator step would copy an NCHW input), and the values are the same in either layout."""
    def run(layout, resumed_nchw=False):
        torch.manual_seed(0)
        buf, outs = FakeBuffer(6), []
        for i in range(8):
            fakes = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(i)).contiguous(memory_format=layout)
            outs.append(buf.query(fakes))
            if resumed_nchw and i == 2:
                buf.load_state_dict({k: v.contiguous() if torch.is_tensor(v) else v for k, v in buf.state_dict().items()})
        return outs

    nhwc, nchw, resumed = run(torch.channels_last), run(torch.contiguous_format), run(torch.channels_last, True)
    assert all(o.is_contiguous(memory_format=torch.channels_last) and not o.is_contiguous() for o in nhwc + resumed)
    assert all(o.is_contiguous() for o in nchw)
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(nhwc, nchw, resumed))


def test_training_refuses_folders_whose_manifests_disagree(tmp_path):
    import json

    a, b = folders(tmp_path)
    space = {"channels": 4, "scaling_factor": 0.18215, "shift_factor": 0.0, "downsample": 8}
    (a / "manifest.json").write_text(json.dumps({"latent_space": space, "latents_scaled": False, "image_size": 128}))
    (b / "manifest.json").write_text(json.dumps({"latent_space": space, "latents_scaled": False, "image_size": 256}))
    with pytest.raises(ValueError, match="image_size.*128.*256"):
        latent_folders(str(a), str(b))
    (b / "manifest.json").write_text(json.dumps({"latent_space": space, "latents_scaled": False, "image_size": 128}))
    assert len(latent_folders(str(a), str(b)).manifests) == 2
    with pytest.raises(ValueError, match="latents_scaled=False but the training config has latents_scaled=True"):
        latent_folders(str(a), str(b), latents_scaled=True)


def test_channel_normalisation_uses_both_training_domains(tmp_path):
    a_dir, b_dir = write_latents(tmp_path / "a", 12), write_latents(tmp_path / "b", 10, seed=1)
    for f in b_dir.glob("*.pt"):  # B: other channel means and scales, like another colour domain
        scale, shift = torch.tensor([1.0, 2.0, 0.5, 1.0]).view(4, 1, 1), torch.tensor([3.0, -2.0, 0.0, 1.0]).view(4, 1, 1)
        torch.save(torch.load(f, weights_only=True) * scale + shift, f)
    d = latent_folders(str(a_dir), str(b_dir), latent_norm="channel", num_workers=1)
    pooled = torch.cat([d.a, d.b]).transpose(0, 1).flatten(1)  # (C, all cells), model space
    torch.testing.assert_close(pooled.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled.std(1), torch.ones(4), atol=1e-4, rtol=0)
    raw_a = torch.stack([torch.load(f, weights_only=True) for f in sorted(a_dir.glob("*.pt"))])
    torch.testing.assert_close(d.convention.model_to_file(d.a), raw_a, atol=1e-4, rtol=0)
    assert d.a.mean(dim=(0, 2, 3)).abs().max() > 0.1, "one pooled map for both domains, not each standardised alone"
    plain = latent_folders(str(a_dir), str(b_dir), num_workers=1)
    assert plain.convention.channel_mean is None and torch.allclose(plain.a, raw_a / 10)  # data.latent_norm=batch: test_config.py


def test_channel_normalisation_travels_with_the_checkpoint(tiny_cfg, tmp_path):
    from lcgan import checkpoint
    from lcgan.train import train
    from lcgan.translator import load_translator

    train(tiny_cfg("data.latent_norm=channel", "train.epochs=1"))
    ck = checkpoint.load(tmp_path / "run" / "model" / "last.pt")
    assert len(ck["convention"]["channel_mean"]) == 4
    t = load_translator(tmp_path / "run" / "model" / "last.pt", torch.device("cpu"))
    assert list(t.convention.channel_std) == ck["convention"]["channel_std"]
