"""Known-transform benchmark: unpaired translation on real photographs where the answer is known.

    python experiments/known_transform/run.py                                   # CPU: 128px crops, model=small, the grade
    python experiments/known_transform/run.py --transform sepia --seeds 0,1,2 model.generator.anchor=patch_ot   # a recipe, 3 seeds
    python experiments/known_transform/run.py --image-size 256 --transform soft_focus device=cuda   # GPU (see suite.sh)

Photographs of ``<shared>/data/{kodak24,cbsd68,mcmaster}`` (110) are split, by photo, into three
disjoint sets: A-train (natural crops), B-train (crops of *other* photos with a fixed transform
(:data:`TRANSFORMS`, ``--transform``) applied: unpaired) and test (held-out photos; the truth is the
transformed crop). A second test set, ``afhq``, holds crops of AFHQ animal photos (another
collection, never trained on). Crops are encoded with the real ``vaelight`` VAE. Each trained model's G
is scored by the PSNR of ``decode(G(encode(x)))`` against ``transform(x)``, beside rows that need no
training: identity ``decode(encode(x))``; the closed-form maps of :mod:`lcgan.baselines` (mean-shift,
moment-matching, Gaussian optimal transport of latent vectors and of 3x3 latent patches), fitted on the
training latents only; a paired upper bound (a 1x1 affine latent map fitted by least squares on the
test pairs themselves); and the oracle ``decode(encode(transform(x)))``, the VAE's ceiling.

Training is ``lcgan.train.train(cfg)`` on the real config: ``conf/train.yaml`` + ``+experiment=known_transform``
(``experiments/known_transform.yaml``) + the positional Hydra overrides (the recipe) + ``seed``.
Outputs (under ``--out``): ``data_<size>px/`` (latent folders a/, b/, test.pt; reused when present),
``runs/<transform>/<name>/seed<k>/`` (training runs), ``results_<transform>_<name>.json`` and ``.md`` (the table).

``--pixel-filter 9`` adds, for identity, every closed-form map and every scored checkpoint, the same
map followed by a 9x9 pixel post-filter (:mod:`lcgan.postfilter`) fitted without pairs on the map's decodes of
the A-train latents against B-train's decoded spectrum: rows ``<map>+pf`` (with ``--no-train``: one copy per data
folder) and keys ``psnr_pf``. Rows ``<map>+pf (decoupled)``: the filter fitted first, on identity's decodes; the
closed-form map then fitted between ``encode(h * decode(A))`` and ``encode(decode(B))`` (one VAE round trip on
each side), so the latent map is left the difference the filter does not explain; then a filter refitted after it.

Every row also gets ``val``: a score needs no truth, the sliced Wasserstein distance between the
translated latents of one half of the test photos and the true target latents of the *other* half
(unpaired, as a user's held-out folders would be); ``summarize.py`` reports how its ranking agrees
with PSNR's.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import shutil
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lcgan import checkpoint
from lcgan.baselines import BASELINES, fit, sliced_wasserstein, validation_key
from lcgan.data import source_key
from lcgan.images import list_images, read_rgb
from lcgan.layout import RunFolder
from lcgan.postfilter import fit_filter
from lcgan.spectrum import domain_spectrum
from lcgan.vae import OnnxVAE

REPO = Path(__file__).resolve().parents[2]
PHOTO_SETS = ("kodak24", "cbsd68", "mcmaster")  # 24 + 68 + 18 natural photographs
OUTSIDE_SETS = ("afhq_stargan_v2/cat", "afhq_stargan_v2/dog", "afhq_stargan_v2/wild")  # 41 animal photos: the "afhq" test
# The transform of domain B: a warm "film" grade, per-channel tone curves on [0, 1] pixels,
#   out_c = lift_c + (1 - lift_c) * gain_c * x_c ** gamma_c   (then clipped to [0, 1]).
# Red lifted and brightened, blue crushed and darkened: a warm cast that depends on intensity,
# so a constant latent shift cannot express it exactly.
GRADE_GAMMA = (0.65, 1.00, 1.60)
GRADE_GAIN = (1.00, 0.92, 0.75)
GRADE_LIFT = (0.08, 0.02, 0.00)


def grade(x: torch.Tensor) -> torch.Tensor:
    """The documented colour grade on images ``(N, 3, H, W)`` in [-1, 1]."""
    v = lambda t: torch.tensor(t, dtype=x.dtype).view(1, 3, 1, 1)  # noqa: E731
    p = x.add(1).div(2).clamp(0, 1)
    p = v(GRADE_LIFT) + (1 - v(GRADE_LIFT)) * v(GRADE_GAIN) * p.pow(v(GRADE_GAMMA))
    return p.clamp(0, 1).mul(2).sub(1)


def _to01(x: torch.Tensor) -> torch.Tensor:
    return x.add(1).div(2).clamp(0, 1)


def _from01(p: torch.Tensor) -> torch.Tensor:
    return p.clamp(0, 1).mul(2).sub(1)


def _luma(p: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of [0, 1] pixels, ``(N, 1, H, W)``."""
    return (p * torch.tensor([0.299, 0.587, 0.114], dtype=p.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _blur(p: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, reflect-padded."""
    r = int(3 * sigma + 0.5)
    k = torch.exp(-torch.arange(-r, r + 1, dtype=p.dtype) ** 2 / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(p.shape[1], 1, 1, 1)
    p = F.conv2d(F.pad(p, (r, r, 0, 0), mode="reflect"), k, groups=p.shape[1])
    return F.conv2d(F.pad(p, (0, 0, r, r), mode="reflect"), k.transpose(2, 3), groups=p.shape[1])


def sepia(x: torch.Tensor) -> torch.Tensor:
    """Cross-channel: the classic sepia matrix (every output channel a mix of all three), at 80% strength."""
    p = _to01(x)
    m = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=x.dtype)
    return _from01(0.2 * p + 0.8 * torch.einsum("oc,nchw->nohw", m, p))


def split_tone(x: torch.Tensor) -> torch.Tensor:
    """Cross-channel and intensity-dependent: shadows pushed to teal, highlights to orange, by luma."""
    p = _to01(x)
    y = _luma(p)
    teal, orange = torch.tensor([-0.10, 0.03, 0.10], dtype=x.dtype), torch.tensor([0.12, 0.03, -0.10], dtype=x.dtype)
    return _from01(p + (1 - y) ** 2 * teal.view(1, 3, 1, 1) + y**2 * orange.view(1, 3, 1, 1))


def soft_focus(x: torch.Tensor) -> torch.Tensor:
    """Spatial: a Gaussian blur (sigma 2 px)."""
    return _from01(_blur(_to01(x), 2.0))


def sharpen(x: torch.Tensor) -> torch.Tensor:
    """Spatial: unsharp mask, ``p + 1.5 (p - blur(p, 1.5 px))``."""
    p = _to01(x)
    return _from01(p + 1.5 * (p - _blur(p, 1.5)))


def dark_edges(x: torch.Tensor) -> torch.Tensor:
    """Local content: pixels near strong luma edges (Sobel magnitude, blurred) darkened by up to 60%."""
    y = _luma(_to01(x))
    sx = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=x.dtype).view(1, 1, 3, 3)
    yp = F.pad(y, (1, 1, 1, 1), mode="reflect")
    edge = (F.conv2d(yp, sx).pow(2) + F.conv2d(yp, sx.transpose(2, 3)).pow(2)).sqrt()
    strength = _blur(edge, 1.0).mul(2).clamp(0, 1)
    return _from01(_to01(x) * (1 - 0.6 * strength))


def null(x: torch.Tensor) -> torch.Tensor:
    """The "do no harm" case: B holds untransformed photographs."""
    return x.clone()


# name -> the transform of domain B, on images (N, 3, H, W) in [-1, 1]; deterministic
TRANSFORMS = {"grade": grade, "sepia": sepia, "split_tone": split_tone, "soft_focus": soft_focus, "sharpen": sharpen,
              "dark_edges": dark_edges, "null": null}


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2, i.e. 1 on [0, 1] pixels)."""
    mse = (x.float() - y.float()).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(4 / mse)


def split_photos(shared: Path, n_photos: int | None, seed: int) -> dict[str, list[Path]]:
    """Photos shuffled with ``seed``, cut 40% A-train / 40% B-train / 20% test (disjoint)."""
    photos = [p for s in PHOTO_SETS for p in list_images(shared / "data" / s)]
    if not photos:
        raise FileNotFoundError(f"no photographs under {shared}/data/{{{','.join(PHOTO_SETS)}}}; set --shared to the project's shared folder")
    order = torch.randperm(len(photos), generator=torch.Generator().manual_seed(seed)).tolist()
    photos = [photos[i] for i in order][:n_photos]
    n_test = max(1, round(0.2 * len(photos)))
    n_a = (len(photos) - n_test) // 2
    return {"a": photos[:n_a], "b": photos[n_a:len(photos) - n_test], "test": photos[len(photos) - n_test:]}


def random_crops(x: torch.Tensor, n: int, size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """``n`` random ``size``-px crops of one image ``(3, H, W)`` at its native resolution."""
    _, h, w = x.shape
    if min(h, w) < size:
        raise ValueError(f"--image-size {size} is larger than a photograph ({w}x{h})")
    tops = torch.randint(0, h - size + 1, (n,), generator=gen).tolist()
    lefts = torch.randint(0, w - size + 1, (n,), generator=gen).tolist()
    return [x[:, top:top + size, left:left + size] for top, left in zip(tops, lefts)]


def read_photo(path: Path, shorter_side: int) -> torch.Tensor:
    """A photograph ``(3, H, W)`` in [-1, 1], scaled (antialiased) so its shorter side is ``shorter_side``."""
    x = read_rgb(path, None)
    scale = shorter_side / min(x.shape[1:])
    return torch.nn.functional.interpolate(x[None], scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)[0].clamp(-1, 1)


def photo_crops(paths: list[Path], n: int, size: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` random ``size``-px crops of each photo, scaled so a crop spans half its shorter side."""
    gen = torch.Generator().manual_seed(seed)
    crops, names = [], []
    for p in paths:
        for k, c in enumerate(random_crops(read_photo(p, 2 * size), n, size, gen)):
            crops.append(c)
            names.append(f"{p.parent.name}_{p.stem}_crop{k}")  # one source image per photo (lcgan.data.source_key)
    return torch.stack(crops), names


def encode(vae: OnnxVAE, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    return torch.cat([vae.encode(c).cpu() for c in x.split(batch)])


def decode(vae: OnnxVAE, z: torch.Tensor, batch: int = 32) -> torch.Tensor:
    return torch.cat([vae.decode(c).cpu() for c in z.split(batch)])


def load_vae(shared: Path, device: str = "cpu", backend: str | None = None) -> OnnxVAE:
    """The real vaelight pair; on CUDA (or with ``backend="torch"``) its graphs run as torch ops: no onnxruntime-gpu
    needed, and the decoder is differentiable."""
    w = shared / "weights" / "vaelight"
    return OnnxVAE(encoder_path=str(w / "VAEencoder.onnx"), decoder_path=str(w / "VAEpreview.onnx"), channels=4, sum_decoder_outputs=True,
                   device=device, backend=backend or ("torch" if device.startswith("cuda") else "onnxruntime"))


def _write_domain(folder: Path, x: torch.Tensor, names: list[str], vae: OnnxVAE, photos: list[str], transform: str) -> None:
    """Latents of each crop and of its pixel flip (flip the pixels, not the latents, as lcgan.encode does), with a manifest.
    Written whole into a private folder, then renamed into place: the suite's parallel processes each find the data
    folder empty on a fresh machine, and none may read another's half-written latents. The first rename wins; the
    others, the same deterministic crops, are dropped."""
    z = encode(vae, torch.cat([x, x.flip(-1)]))
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, name in enumerate(names):
        torch.save(z[i].clone(), tmp / f"{name}.pt")
        torch.save(z[i + len(names)].clone(), tmp / f"{name}_flip.pt")
    manifest = {"lcgan_manifest": 1, "vae": vae.describe(), "latent_space": vae.space.as_dict(), "latents_scaled": False,
                "image_size": x.shape[-1], "latent_shape": list(z.shape[1:]), "flip_copies": True, "count": len(names),
                "files": 2 * len(names), "photos": photos, "transform": transform}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    try:
        tmp.rename(folder)
    except OSError:  # the folder exists: another process's complete copy, or a leftover of an interrupted older run
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "manifest.json").is_file():
            raise ValueError(f"{folder} holds latents without a manifest.json (a run interrupted while writing it); "
                             "delete that folder and run again") from None


def _save_atomic(obj, path: Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``: a parallel reader sees the whole file or none."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    checkpoint.atomic_write_bytes(path, buf.getvalue())


def prepare(shared: Path, folder: Path, transform: str, size: int, crops: int, n_photos: int | None, seed: int, vae: OnnxVAE,
            b_photos: str = "other") -> dict:
    """Latent folders ``a/`` and ``<transform>/b/``, test crops ``test.pt`` and ``afhq.pt``; each reused when present.
    ``b_photos="same"``: B-train is other random crops of A-train's photos (see ``--b-photos``).
    Returns the test sets: ``{"test": {"x", "names", "photos"}, "afhq": {...}}`` (pixels in [-1, 1])."""
    split = split_photos(shared, n_photos, seed)
    if b_photos == "same":
        split["b"] = split["a"]
    rel = lambda paths: [str(p.relative_to(shared)) for p in paths]  # noqa: E731
    if not (folder / "a" / "manifest.json").is_file():
        x, names = photo_crops(split["a"], crops, size, seed + 1)
        _write_domain(folder / "a", x, names, vae, rel(split["a"]), "none")
    if not (folder / transform / "b" / "manifest.json").is_file():
        x, names = photo_crops(split["b"], crops, size, seed + 2)  # the same crops for every transform
        _write_domain(folder / transform / "b", TRANSFORMS[transform](x), names, vae, rel(split["b"]), transform)
    sets = {}
    for key, photos, offset in (("test", split["test"], 3), ("afhq", [p for s in OUTSIDE_SETS for p in list_images(shared / "data" / s)], 4)):
        path = folder / f"{key}.pt"
        if not path.is_file():
            if not photos:
                continue
            x, names = photo_crops(photos, crops, size, seed + offset)
            _save_atomic({"x": x, "names": names, "photos": rel(photos)}, path)
        sets[key] = torch.load(path, weights_only=True)
    return sets


def held_out(shared: Path, folder: Path, transform: str, size: int, crops: int, seed: int, vae: OnnxVAE) -> tuple[Path, Path]:
    """``--held-out afhq``: unpaired held-out latent folders for ``data.val_a_dir``/``data.val_b_dir`` (the gain's choice,
    best.pt's metric) from the AFHQ photos, outside the training folders and the test photos: A = natural crops of every
    other photo, B = this transform on crops of the rest. The ``afhq`` test set then shows photos the choice has seen
    (unpaired, without truth); the ``test`` photos stay untouched by it."""
    photos = [p for s in OUTSIDE_SETS for p in list_images(shared / "data" / s)]
    if len(photos) < 2:
        raise FileNotFoundError(f"--held-out afhq needs the AFHQ photos under {shared}/data/{{{','.join(OUTSIDE_SETS)}}}")
    rel = lambda paths: [str(p.relative_to(shared)) for p in paths]  # noqa: E731
    val_a, val_b = folder / "afhq_val_a", folder / transform / "afhq_val_b"
    if not (val_a / "manifest.json").is_file():
        x, names = photo_crops(photos[0::2], crops, size, seed + 5)
        _write_domain(val_a, x, names, vae, rel(photos[0::2]), "none")
    if not (val_b / "manifest.json").is_file():
        x, names = photo_crops(photos[1::2], crops, size, seed + 6)
        _write_domain(val_b, TRANSFORMS[transform](x), names, vae, rel(photos[1::2]), transform)
    return val_a, val_b


def with_truth(vae: OnnxVAE, test: dict, transform: str) -> dict:
    """A test set with this transform's truth: ``y``, its latents ``z_y``, the oracle's reconstruction ``y_rec``, and ``z_x``."""
    y = TRANSFORMS[transform](test["x"])
    z_y = encode(vae, y)
    return {**test, "y": y, "z_x": encode(vae, test["x"]), "z_y": z_y, "y_rec": decode(vae, z_y)}


def data_folder(out: Path, image_size: int, crops: int = 4, photos: int | None = None) -> Path:
    """Where :func:`prepare` writes a split's latents and test sets; the probes read the suite's (4 crops, every photo)."""
    return out / (f"data_{image_size}px_{crops}crops" + (f"_{photos}photos" if photos else ""))


def probe_parser(doc: str, transforms: str | None) -> argparse.ArgumentParser:
    """The options this folder's probes share: ``--transforms`` (comma separated, this default; None: the probe names
    its own), ``--shared``, and ``--out`` and ``--image-size``, which find run.py's data (:func:`data_folder`)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    if transforms is not None:
        ap.add_argument("--transforms", default=transforms)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "known_transform")
    ap.add_argument("--image-size", type=int, default=256)
    return ap


def load_folder(folder: Path) -> tuple[torch.Tensor, list[str]]:
    """The latents of a folder and the source photo of each (as lcgan.train groups them)."""
    files = sorted(folder.glob("*.pt"))
    return torch.stack([torch.load(f, weights_only=True) for f in files]), [source_key(f.name) for f in files]


def load_one_flip(folder: Path) -> tuple[torch.Tensor, list[str]]:
    """:func:`load_folder` with one flip of each crop (files sort as crop, crop_flip): the colour probes' fitting set."""
    z, groups = load_folder(folder)
    return z[::2], groups[::2]


def unpaired_val(z: torch.Tensor, test: dict) -> float:
    """No truth needed: SWD (3x3 latent patches) between the translations of the first half of the
    test crops and the target latents of the second half (other photos: unpaired). Lower is better."""
    h = len(z) // 2
    return sliced_wasserstein(z[:h], test["z_y"][h:])


def score_latents(vae: OnnxVAE, test: dict, z: torch.Tensor, lpips=None) -> tuple[float, float, float, float]:
    """Mean PSNR (dB) of decode(z) against the truth, against the oracle's reconstruction
    decode(encode(truth)) (the VAE's own error removed: differences show better), mean LPIPS
    against the truth (NaN without an LPIPS network), and the unpaired validation score."""
    x = decode(vae, z)
    dist = torch.cat([lpips(a, b) for a, b in zip(x.split(32), test["y"].split(32))]).mean().item() if lpips else math.nan
    return *psnr_pair(x, test), dist, unpaired_val(z, test)


def psnr_pair(x: torch.Tensor, test: dict) -> tuple[float, float]:
    """Mean PSNR (dB) of images ``x`` against the truth and against the oracle's reconstruction."""
    return psnr(x, test["y"]).mean().item(), psnr(x, test["y_rec"]).mean().item()


class PostFilter:
    """``--pixel-filter``: fits a post-filter on a map's decodes of the A-train latents against B-train's decoded
    spectrum (on the VAE's device) and scores the filtered decodes of the test latents."""

    def __init__(self, vae: OnnxVAE, z_a: torch.Tensor, z_b: torch.Tensor, size: int, steps: int) -> None:
        self.vae, self.z_a, self.size, self.steps = vae, z_a, size, steps
        self.target = domain_spectrum(self.decode, z_b)
        self.fitted: dict[str, torch.nn.Module] = {}  # closed-form map -> its filter, shared by the test sets

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.vae.decode(c.to(self.vae.device)).to(self.vae.device) for c in z.split(32)])

    @torch.no_grad()
    def round_trip(self, z: torch.Tensor, h=None) -> torch.Tensor:
        """``encode(h * decode(z))`` (``h`` None: the identity), on the CPU as the latent folders are."""
        out = []
        for c in z.split(32):
            x = self.decode(c)
            out.append(self.vae.encode((h(x) if h is not None else x).clamp(-1, 1)).cpu())
        return torch.cat(out)

    def fit(self, mapping, seed: int):
        with torch.no_grad():
            images = self.decode(torch.cat([mapping(c) for c in self.z_a.split(64)]))
        return fit_filter(images, self.target, self.size, self.steps, seed=seed)

    def score(self, h, test: dict, z: torch.Tensor) -> tuple[float, float, float, float]:
        return score_filtered(self.vae, h, test, z)


@torch.no_grad()
def score_filtered(vae: OnnxVAE, h, test: dict, z: torch.Tensor) -> tuple[float, float, float, float]:
    """Like :func:`score_latents` for ``h * decode(z)`` (``h`` a pixel filter on the VAE's device): LPIPS and val (a latent score) left out."""
    return *psnr_pair(filtered_decode(vae, h, z), test), math.nan, math.nan


@torch.no_grad()
def filtered_decode(vae: OnnxVAE, h, z: torch.Tensor) -> torch.Tensor:
    """``h * decode(z)`` clamped to [-1, 1], on the CPU (``h`` None: the decode alone)."""
    out = []
    for c in z.split(32):
        x = vae.decode(c.to(vae.device)).to(vae.device)
        out.append((h(x) if h is not None else x).clamp(-1, 1).cpu())
    return torch.cat(out)


def generator(t, vae: OnnxVAE):
    """A loaded translator's G as a map of raw latents (on the CPU) to raw latents, as the suite scores it."""
    c = t.convention  # with data.latent_norm=channel, the training domains' statistics
    return lambda z: c.model_to_raw(t.g_ab(c.raw_to_model(z.to(vae.device), vae.space)), vae.space).cpu()


def paired_affine(z_x: torch.Tensor, z_y: torch.Tensor) -> torch.Tensor:
    """The paired upper bound: a 1x1 affine latent map fitted by least squares on the pairs themselves, applied to them."""
    c = z_x.shape[1]
    xs = torch.cat([z_x.transpose(0, 1).reshape(c, -1), torch.ones(1, z_x.numel() // c)]).T.double()  # (cells, C+1)
    ys = z_y.transpose(0, 1).reshape(c, -1).T.double()
    coef = torch.linalg.lstsq(xs, ys).solution  # (C+1, C)
    return (xs @ coef).T.reshape(c, len(z_x), *z_x.shape[2:]).transpose(0, 1).float()


def baseline_rows(vae: OnnxVAE, test: dict, a: tuple[torch.Tensor, list[str]], b: tuple[torch.Tensor, list[str]], lpips=None,
                  post: PostFilter | None = None) -> dict[str, tuple]:
    """The rows that need no training: (PSNR vs truth, PSNR vs oracle reconstruction, LPIPS, val)."""
    maps = {"identity": lambda z: z, **{kind: fit(kind, a[0], b[0], a[1], b[1]) for kind in BASELINES}}
    rows = {}
    for kind, m in maps.items():
        rows[kind] = score_latents(vae, test, m(test["z_x"]), lpips)
    if post is not None:
        for kind, m in maps.items():
            if kind not in post.fitted:
                post.fitted[kind] = post.fit(m, seed=0)
            rows[kind + "+pf"] = post.score(post.fitted[kind], test, m(test["z_x"]))
        if "decoupled" not in post.fitted:
            a_f, b_rt = post.round_trip(a[0], post.fitted["identity"]), post.round_trip(b[0])
            post.fitted["decoupled"] = {kind: fit(kind, a_f, b_rt, a[1], b[1]) for kind in BASELINES}
        for kind, m in post.fitted["decoupled"].items():
            if kind + "~" not in post.fitted:
                post.fitted[kind + "~"] = post.fit(m, seed=0)
            rows[kind + "+pf (decoupled)"] = post.score(post.fitted[kind + "~"], test, m(test["z_x"]))
    rows["paired_affine"] = score_latents(vae, test, paired_affine(test["z_x"], test["z_y"]), lpips)
    rows["oracle"] = score_latents(vae, test, test["z_y"], lpips)
    rows["pixels_identity"] = (psnr(test["x"], test["y"]).mean().item(), math.nan, math.nan, math.nan)
    return rows


@torch.no_grad()
def scaled_outputs(path: Path, vae: OnnxVAE, z_x: torch.Tensor, scales: list[float], h=None, use_ema: bool = True):
    """``(s, G_s latents, the run's output images)`` for each of ``scales``: G's correction scaled by ``s`` (the file's
    recorded gain left out: ``s`` counts from the trained G), decoded, through the pixel post-filter ``h`` (None: the
    checkpoint's own, if any), clamped. ``use_ema``: the EMA generator where the file keeps one, as lcgan.evaluate takes it."""
    from lcgan import gain
    from lcgan.translator import load_translator

    t = load_translator(path, vae.device, use_ema=use_ema, use_gain=False)
    h = h if h is not None else t.pixel_filter("g_ab")
    for s in scales:
        with gain.scaled(t.g_ab, s, f"{path}: G"):
            z = generator(t, vae)(z_x)
            yield s, z, filtered_decode(vae, h, z)


def scale_grid(path: Path, vae: OnnxVAE, tests: dict[str, dict], scales: list[float], h=None,
               use_ema: bool = False) -> dict[str, dict[str, float]]:
    """``--scale-grid``: the test PSNR of G's output at each of ``scales`` (:func:`scaled_outputs`) on every test set. With
    ``h`` (the pixel post-filter :func:`score_checkpoint` scored ``psnr_pf`` with) the grid is of that output,
    ``psnr_pf_by_scale[_afhq]``, else ``psnr_by_scale[_afhq]``: the grid at the recorded gain is the scored row. With
    ``use_ema``, the EMA generator's grid (``..._by_scale_ema[_afhq]``, named as its scores are). Its maximum needs the
    truth: no rule of choosing the gain can beat it (results/anneal.md)."""
    suffix = "_ema" if use_ema else ""
    return {("psnr_pf" if h is not None else "psnr") + "_by_scale" + suffix + ("" if name == "test" else f"_{name}"):
            {f"{s:g}": psnr(y, test["y"]).mean().item() for s, _, y in scaled_outputs(path, vae, test["z_x"], scales, h, use_ema)}
            for name, test in tests.items()}


@torch.no_grad()
def score_checkpoint(path: Path, vae: OnnxVAE, tests: dict[str, dict], lpips=None, post: PostFilter | None = None,
                     seed: int = 0, scales: list[float] | None = None) -> dict[str, float]:
    """PSNR of decode(G(z)) vs the truth on every test set, with G (and G_ema when the run kept one),
    rebuilt as lcgan.evaluate does (an allow-list of our own classes, never the file's config);
    with post-filters in the checkpoint (``train.post_filter``), also G followed by its filter (``psnr_pf``); else with
    ``post``, G followed by a pixel post-filter fitted here on G's translations of A-train. ``scales``, where the file
    records a gain: also :func:`scale_grid`."""
    from lcgan.translator import load_translator

    ck = checkpoint.load(path)
    out = {"epoch": ck["epoch"], "step": ck["epoch"] * ck["metrics"]["steps"], **({"gain": ck["gain"]} if "gain" in ck else {})}
    filters = {}  # each generator's post-filter (G's, its EMA's), for the scale grid
    for use_ema in (False, True) if "G_ema" in ck else (False,):
        t = load_translator(path, vae.device, use_ema=use_ema)
        suffix = "_ema" if use_ema else ""
        g = generator(t, vae)
        h = t.pixel_filter("g_ab")
        if h is None and post is not None:
            h = post.fit(g, seed)
        filters[use_ema] = h
        for name, test in tests.items():
            z = g(test["z_x"])
            tag = suffix if name == "test" else f"{suffix}_{name}"
            out["psnr" + tag], out["psnr_vae" + tag], out["lpips" + tag], out["val" + tag] = score_latents(vae, test, z, lpips)
            if h is not None:
                out["psnr_pf" + tag], out["psnr_vae_pf" + tag] = score_filtered(vae, h, test, z)[:2]
    if scales and "gain" in ck:
        for use_ema, h in filters.items():
            out.update(scale_grid(path, vae, tests, scales, h, use_ema))
    return out


def load_lpips(mode: str, backbone: str | None):
    """The LPIPS network of ``lcgan.metrics`` for ``--lpips``, or None."""
    if mode == "off":
        return None
    from lcgan.metrics import Lpips, MissingWeightsError

    try:
        return Lpips("alex", backbone_path=backbone, random=mode == "random")
    except MissingWeightsError as e:
        if mode == "on":  # lcgan.metrics names eval.lpips.backbone_path; here the setting is a flag
            raise MissingWeightsError(f"--lpips on: {e}; here pass --lpips-backbone FILE, or --lpips auto to skip LPIPS") from None
        print(f"  LPIPS skipped (--lpips auto; --lpips-backbone sets the weights): {str(e)[:300]}")
        return None


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def train_and_score(args, data: Path, overrides: list[str], seed: int, run: Path, vae: OnnxVAE, tests: dict, lpips=None,
                    post: PostFilter | None = None) -> list[dict]:
    """Train one seed, score the checkpoints nearest to ``--eval-steps`` and best.pt; delete the other epoch files."""
    from lcgan.train import train

    enc = args.shared / "weights" / "vaelight"
    cfg = compose_train(["+experiment=known_transform", f"data.a_dir={data / 'a'}", f"data.b_dir={data / args.transform / 'b'}",
                         f"vae.encoder_path={enc / 'VAEencoder.onnx'}", f"vae.decoder_path={enc / 'VAEpreview.onnx'}",
                         *overrides, f"seed={seed}", f"out_dir={run}"])
    folder = RunFolder(run)
    if not folder.epoch_checkpoint(cfg.train.epochs).is_file():  # a finished run is scored, not retrained
        train(cfg)
    steps = json.loads(folder.log.read_text().splitlines()[0])["steps"]
    saved = sorted(int(f.stem.split("_")[1]) for f in folder.epoch_checkpoints())  # every train.ckpt_every epochs, and the last
    epochs = sorted({min(saved, key=lambda e: abs(e * steps - s)) for s in args.eval_steps} | {saved[-1]})
    if cfg.train.gain_scales and (cfg.data.val_a_dir or cfg.data.val_fraction):
        for e in epochs:
            calibrate_epoch(folder.epoch_checkpoint(e), cfg, vae)
    used = crossfit_epochs(folder, epochs, steps, cfg, vae) if cfg.train.gain_crossfit else []
    scales = sorted({0.0, 1.0, *cfg.train.gain_scales}) if args.scale_grid else None
    rows = [score_checkpoint(folder.epoch_checkpoint(e), vae, tests, lpips, post, seed, scales) for e in epochs]
    if folder.best.is_file():  # kept by the run's validation metric: held-out SWD (data.val_fraction > 0), else the cycle loss
        last = json.loads(folder.log.read_text().splitlines()[-1])
        rows.append({**score_checkpoint(folder.best, vae, tests, lpips, post, seed, scales), "best": True,
                     "best_by": validation_key(last)})
    if not args.keep_checkpoints:
        for f in folder.epoch_checkpoints():
            if int(f.stem.split("_")[1]) not in epochs:
                f.unlink()
        for f in RunFolder(folder.crossfit_side).epoch_checkpoints()[:-1]:  # the side run's but its last and those used
            if f not in used:
                f.unlink()
    return rows


def calibrate_epoch(path: Path, cfg, vae: OnnxVAE) -> None:
    """A scored epoch file without a gain (the run went on past it): its gain chosen as ``train.gain_scales`` chooses it
    at the end of a run of that length, by the same :func:`lcgan.gain.calibrate` on the run's held-out folders. So one
    run to 2x the steps scores both lengths (the learning rate is constant over both)."""
    from lcgan import gain
    from lcgan.latent_files import load_latent_dir
    from lcgan.translator import load_translator

    ck = checkpoint.load(path)
    if "gain" in ck:
        return
    t = load_translator(path, vae.device, use_gain=False)
    if cfg.data.val_a_dir:
        val_a, val_b = (t.convention.file_to_model(load_latent_dir(cfg.data[k], f"data.{k}")[0]) for k in ("val_a_dir", "val_b_dir"))
    else:  # data.val_fraction: the images lcgan.train held out of the training folders, split as it splits them
        domains = instantiate(cfg.data)  # the run's own config (composed here), as lcgan.train builds its data
        val_a, val_b = domains.val_a, domains.val_b
    chosen = gain.calibrate(t, vae, val_a, val_b, list(cfg.train.gain_scales), tolerance=cfg.train.gain_tolerance,
                            shrink=cfg.train.gain_shrink)
    gain.record(path, {"g_ab": chosen["g_ab"], "g_ba": chosen["g_ba"]})
    table = {"gain_tolerance": cfg.train.gain_tolerance, "gain_shrink": cfg.train.gain_shrink, "epoch": ck["epoch"],
             path.name: chosen}  # as lcgan.train's logs/gain.json, for this epoch: another rule can be applied later
    checkpoint.atomic_write_bytes(RunFolder(path.parent.parent).logs / f"gain_{path.stem}.json", json.dumps(table, indent=1).encode())


def crossfit_epochs(folder: RunFolder, epochs: list[int], steps: int, cfg, vae: OnnxVAE) -> list[Path]:
    """``train.gain_crossfit``: a scored epoch file without a gain (the run went on past it) takes the choice its side run
    makes at as many steps: the side's nearest epoch file, its gain chosen by :func:`calibrate_epoch` on the side's split,
    then transferred as ``train.gain_transfer`` says (:func:`lcgan.gain.transfer` unless ``scale``, on the training
    latents, as lcgan.train does at the end). So one run to 2x the steps scores both lengths, as the measured cross-fit
    did (results/gain.md). Returns the side run's epoch files used."""
    from lcgan import gain
    from lcgan.train import crossfit_side
    from lcgan.translator import load_translator

    side = RunFolder(folder.crossfit_side)
    side_steps = json.loads(side.log.read_text().splitlines()[0])["steps"]
    side_cfg = crossfit_side(cfg, folder)  # its split and rule, as lcgan.train ran it
    domains = instantiate(cfg.data) if cfg.train.gain_transfer != "scale" else None
    used = []
    for e in epochs:
        path = folder.epoch_checkpoint(e)
        nearest = min(side.epoch_checkpoints(), key=lambda p: abs(int(p.stem.split("_")[1]) * side_steps - e * steps))
        used.append(nearest)  # kept, also when a resumed scoring finds the choice made
        if "gain" in checkpoint.load(path):  # the last epoch (lcgan.train recorded it), or scored before
            continue
        calibrate_epoch(nearest, side_cfg, vae)
        chosen = checkpoint.load(nearest)["gain"]
        if domains is not None:
            chosen = gain.transfer(load_translator(nearest, vae.device, use_gain=False), load_translator(path, vae.device, use_gain=False),
                                   vae, domains.a, domains.b, chosen, list(side_cfg.train.gain_scales), cfg.train.gain_transfer)
        gain.record(path, {"g_ab": chosen["g_ab"], "g_ba": chosen["g_ba"]})
    return used


def synthetic_err(overrides: list[str], seed: int, run: Path) -> dict[str, float]:
    """The same recipe on the embedded synthetic task (its default length): ``err``, 1 = identity."""
    from lcgan.train import train

    keep = [o for o in overrides if not o.startswith(("data.a_dir", "data.b_dir", "data.val_", "data.flip", "train.gain_"))]
    train(compose_train([*keep, f"seed={seed}", f"out_dir={run}", "train.vis_every=0"]))
    log = [json.loads(line) for line in RunFolder(run).log.read_text().splitlines()]
    last = log[-1]
    return {"err": last["err"], "err_min": min(r["err"] for r in log), "base_mean_shift": (last["base_mean_shift_G"] + last["base_mean_shift_F"]) / 2}


def table(name: str, base: dict[str, dict], runs: dict[int, list[dict]], synth: dict[int, dict], sizes: str) -> str:
    """Markdown: the rows without training, then the model's PSNR per eval point (median over seeds, and each seed), per test set."""
    num = lambda v: "" if v is None or math.isnan(v) else f"{v:.4f}"  # noqa: E731
    lines = [f"# known_transform: {name}", "", sizes, ""]
    for test_name, rows in base.items():
        tag = "" if test_name == "test" else f"_{test_name}"
        lines += ["", f"## test set: {test_name}", "",
                  "| row | step | epoch | PSNR vs truth, dB (median) | PSNR vs oracle recon. (median) | LPIPS vs truth (median) "
                  "| val (unpaired SWD) | seeds (vs truth) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for k, v in rows.items():
            if k != "pixels_identity":
                lines.append(f"| {k} | | | {v[0]:.2f} | {v[1]:.2f} | {num(v[2])} | {num(v[3])} | |")
        points = sorted({(r["epoch"], bool(r.get("best"))) for rs in runs.values() for r in rs})
        for epoch, best in points:
            for key in ("psnr", "psnr_ema"):
                pick = [r for rs in runs.values() for r in rs if r["epoch"] == epoch and bool(r.get("best")) == best and key + tag in r]
                if not pick:
                    continue
                vals = [r[key + tag] for r in pick]
                col = lambda f, pick=pick, key=key, tag=tag: statistics.median(r.get(key.replace("psnr", f) + tag, math.nan) for r in pick)  # noqa: E731
                step = pick[0]["step"]
                label = ("model" if key == "psnr" else "model EMA") + (" best.pt" if best else "")
                lines.append(f"| {label} | {step if not best else ''} | {epoch} | {statistics.median(vals):.2f} | {col('psnr_vae'):.2f} | "
                             f"{num(col('lpips'))} | {num(col('val'))} | {', '.join(f'{v:.2f}' for v in vals)} |")
    if synth:
        errs = [s["err"] for s in synth.values()]
        lines += ["", f"synthetic task err (1 = identity, lower is better): median {statistics.median(errs):.3f} "
                  f"({', '.join(f'{e:.3f}' for e in errs)}); mean-shift baseline {next(iter(synth.values()))['base_mean_shift']:.3f}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the training recipe, e.g. model.generator.output=tanh train.lambda_id=0")
    ap.add_argument("--transform", choices=sorted(TRANSFORMS), default="grade", help="the transform that makes domain B (and the truth)")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the project's shared folder (data/ and weights/)")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "known_transform", help="where data, runs and tables go")
    ap.add_argument("--name", default=None, help="label of this recipe (default: the overrides joined)")
    ap.add_argument("--image-size", type=int, default=128, help="crop size in pixels (128: 16x16 latents; 256 on a GPU)")
    ap.add_argument("--crops", type=int, default=4, help="random crops per photograph (each also flipped in A and B)")
    ap.add_argument("--photos", type=int, default=None, help="use only N photographs (tests)")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the photo split and the crops")
    ap.add_argument("--b-photos", choices=("other", "same"), default="other",
                    help="other: B-train shows other photos than A-train (the suite); same: other random crops of A-train's "
                         "photos, still unpaired, so the domains differ by the transform and not by what the photos show "
                         "(a control: what a recipe learns once the photo sets' content differences are gone); "
                         "everything goes to OUT/b_same/")
    ap.add_argument("--held-out", choices=("none", "afhq"), default="none",
                    help="afhq: unpaired held-out latent folders of the AFHQ photos as data.val_a_dir/val_b_dir (what "
                         "train.gain_scales chooses on and best.pt is kept by); the test photos stay outside every choice")
    ap.add_argument("--seeds", default="0", help="training seeds, comma separated; tables report the median")
    ap.add_argument("--eval-steps", default="300,900,1800", help="score the checkpoints nearest these optimisation steps (and the last)")
    ap.add_argument("--vae-device", default="cpu", help="where the VAE encodes and decodes for scoring (cuda: as torch ops on the GPU)")
    ap.add_argument("--no-train", action="store_true", help="only the rows without training")
    ap.add_argument("--synthetic", action="store_true", help="also train the recipe on the synthetic default and report its err")
    ap.add_argument("--lpips", choices=("auto", "on", "off", "random"), default="auto",
                    help="LPIPS (alex) against the truth: auto = when its backbone can be had, else skipped with the reason; "
                         "on = required; random = a random backbone (checks the plumbing, meaningless values)")
    ap.add_argument("--lpips-backbone", default=None, help="torchvision AlexNet state dict for LPIPS (e.g. alexnet-owt-7be5be79.pth); "
                                                            "default: torchvision's cache/download")
    ap.add_argument("--pixel-filter", type=int, default=0, help="N > 0: also score every map followed by an N x N pixel post-filter "
                                                                  "fitted without pairs (lcgan.postfilter; rows <map>+pf)")
    ap.add_argument("--pixel-filter-steps", type=int, default=300, help="Adam steps of each filter's fit (batches of 32 decodes)")
    ap.add_argument("--keep-checkpoints", action="store_true", help="keep every epoch_XXXX.pt (default: only the scored ones)")
    ap.add_argument("--scale-grid", action="store_true", help="runs with train.gain_scales: also score each checkpoint with G's "
                    "correction at every one of those scales, and its EMA's where the run keeps one (psnr_by_scale[_ema]: where the "
                    "best gain, chosen with the truth, lies)")
    args = ap.parse_intermixed_args(argv)  # recipe overrides may come before or after the options
    args.eval_steps = [int(s) for s in args.eval_steps.split(",") if s]
    args.shared = args.shared.resolve()
    name = re.sub(r"[^\w.,+-]+", "-", args.name or "_".join(args.overrides) or "default")  # a folder name
    if args.b_photos == "same":  # its own data, runs and results: a control never mixes with (or is scored as) the suite's
        args.out = args.out / "b_same"
    t0 = time.time()

    vae = load_vae(args.shared, args.vae_device)
    data = data_folder(args.out, args.image_size, args.crops, args.photos)
    sets = prepare(args.shared, data, args.transform, args.image_size, args.crops, args.photos, args.split_seed, vae, args.b_photos)
    tests = {k: with_truth(vae, v, args.transform) for k, v in sets.items()}
    z_a, z_b = load_folder(data / "a"), load_folder(data / args.transform / "b")
    if args.held_out == "afhq":
        val_a, val_b = held_out(args.shared, data.resolve(), args.transform, args.image_size, args.crops, args.split_seed, vae)
        # the gain chosen on those folders, not by the preset's cross-fit (a recipe may still say otherwise)
        args.overrides = [f"data.val_a_dir={val_a}", f"data.val_b_dir={val_b}", "train.gain_crossfit=0", *args.overrides]
    lpips = load_lpips(args.lpips, args.lpips_backbone)
    post = PostFilter(vae, z_a[0], z_b[0], args.pixel_filter, args.pixel_filter_steps) if args.pixel_filter else None
    base = {k: baseline_rows(vae, t, z_a, z_b, lpips, post if args.no_train else None) for k, t in tests.items()}
    sizes = (f"transform {args.transform}; A-train {len(z_a[0])} latents, B-train {len(z_b[0])}"
             + (" (other crops of A-train's photos)" if args.b_photos == "same" else "") + ", "
             + ", ".join(f"{k} {len(t['x'])} crops ({len(t['photos'])} photos)" for k, t in tests.items())
             + f"; {args.image_size}px -> latents {list(z_a[0].shape[1:])}; held-out: {args.held_out}; "
             + f"recipe: {' '.join(args.overrides) or '(preset defaults)'}")
    print(f"known_transform | {sizes}\n  " + " | ".join(f"{k} {v[0]:.2f} dB" for k, v in base["test"].items()))
    runs, synth = {}, {}
    if not args.no_train:
        for seed in (int(s) for s in args.seeds.split(",")):
            run = args.out / "runs" / args.transform / name / f"seed{seed}"
            runs[seed] = train_and_score(args, data.resolve(), args.overrides, seed, run, vae, tests, lpips, post)
            print(f"  seed {seed}: " + " | ".join(f"epoch {r['epoch']}{' best' if r.get('best') else ''} {r['psnr']:.2f} dB" for r in runs[seed]))
            if args.synthetic:
                synth[seed] = synthetic_err(args.overrides, seed, args.out / "runs" / args.transform / name / f"synthetic_seed{seed}")
                print(f"  seed {seed}: synthetic err {synth[seed]['err']:.3f}")
    result = {"name": name, "transform": args.transform, "overrides": args.overrides, "held_out": args.held_out, "sizes": sizes, "baselines": base,
              "runs": runs, "synthetic": synth, "seconds": round(time.time() - t0, 1),
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() and any(o.startswith("device=cuda") for o in args.overrides)
              else f"CPU ({os.cpu_count()} cores)"}
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_bytes(args.out / f"results_{args.transform}_{name}.json", json.dumps(result, indent=2).encode())
    md = table(f"{args.transform}: {name}", base, runs, synth, sizes)
    checkpoint.atomic_write_bytes(args.out / f"results_{args.transform}_{name}.md", md.encode())
    print(md)
    return result


if __name__ == "__main__":
    main()
