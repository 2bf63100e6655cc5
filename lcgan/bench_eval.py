"""Throughput of ``lcgan.evaluate``'s own pipeline (:func:`lcgan.scoring.score_outputs`), and what mixed precision
does to its numbers: ``python -m lcgan.bench bench.eval.enabled=true``.

Real-size, randomly initialised networks (no downloads): the SD1.5 VAE architecture (diffusers
``AutoencoderKL``), a resnet9 generator, LPIPS-alex, CLIP ViT-B-32 and Inception-v3, on random uint8
images: encode -> G -> decode -> uint8 -> LPIPS and CLIP against the source, Inception features (with
clean-fid's CPU resizer on worker threads, as evaluation does). In one run, on one device:

- batched with bf16 autocast (what ``lcgan.evaluate`` does on CUDA), batched in fp32, and the per-image
  loop (batch 1, bf16): images/s of each and the speedup of batching;
- agreement of bf16 with fp32 on the same images: FID's relative difference (both against the fp32
  features of the sources), and the largest per-image difference of LPIPS and of the CLIP cosine.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from lcgan.devices import autocast, channels_last, describe
from lcgan.fid import Fid, fid_from_features, gaussian
from lcgan.images import from_uint8
from lcgan.latents import Convention, LatentSpace
from lcgan.metrics import Clip, Lpips
from lcgan.models import ResnetGenerator
from lcgan.scoring import Metrics, encode, score_outputs

SD15_VAE = dict(  # diffusers' SD1.5 VAE config (stable-diffusion-v1-5/vae/config.json)
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=512,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
RESNET9 = dict(ngf=64, n_blocks=9, n_downsampling=2)


class RandomKLVAE:
    """A randomly initialised diffusers ``AutoencoderKL`` of ``config``, in lcgan's VAE interface (raw latents)."""

    def __init__(self, config: dict, device: torch.device) -> None:
        from diffusers import AutoencoderKL

        self.device = device
        self.vae = AutoencoderKL(**config).to(device).eval().requires_grad_(False)
        self.space = LatentSpace(channels=config["latent_channels"], downsample=2 ** (len(config["block_out_channels"]) - 1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x.to(self.device)).latent_dist.mean.float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z.to(self.device)).sample.float().clamp(-1, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def agreement(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray) -> dict:
    """How far ``other``'s scores (per-image ``lpips``, ``clip``, Inception ``feats``) are from ``reference``'s:
    FID of each against the Gaussian ``(mu, sigma)``, their relative difference, and the largest per-image
    differences of LPIPS and of the CLIP cosine."""
    fid_ref, fid_other = fid_from_features(reference["feats"], mu, sigma), fid_from_features(other["feats"], mu, sigma)
    return {
        "fid_fp32": fid_ref, "fid_bf16": fid_other,
        "fid_rel_diff": abs(fid_other - fid_ref) / max(abs(fid_ref), 1e-12),
        "lpips_max_abs_diff": float(np.abs(other["lpips"] - reference["lpips"]).max()),
        "clip_max_abs_diff": float(np.abs(other["clip"] - reference["clip"]).max()),
    }


def bench_eval(n_images: int, loop_images: int, batch_size: int, image_size: int, device: torch.device, seed: int = 0,
               vae_config: dict = SD15_VAE, generator: dict = RESNET9, metrics: Metrics | None = None) -> dict:
    """Time the pipeline batched (bf16 and fp32) and per image, and compare bf16 with fp32; returns the numbers.

    ``metrics``: the metric networks (default: random LPIPS-alex, CLIP ViT-B-32 and Inception-v3 at full size).
    """
    torch.manual_seed(seed)
    vae = RandomKLVAE(vae_config, device)
    g = ResnetGenerator(vae.space.channels, **generator).to(device).eval().requires_grad_(False)
    workers = min(16, os.cpu_count() or 1)  # Inception's resize threads
    metrics = metrics or Metrics(Lpips("alex", random=True, device=device, seed=seed),
                                 Clip("ViT-B-32", random=True, device=device, seed=seed + 1),
                                 Fid(random=True, device=device, seed=seed + 2, workers=workers))
    channels_last(vae.vae, g, metrics.lpips.model, metrics.clip.model)
    conv = Convention()  # model space as training sees it: the default latent divisor
    images = torch.randint(0, 256, (n_images, 3, image_size, image_size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    if device.type == "cuda":
        images = images.pin_memory()
    print(f"lcgan.bench eval | {describe(device)} | torch {torch.__version__} | {n_images} images at {image_size}px, "
          f"batch {batch_size}, per-image loop on {loop_images}", flush=True)

    def pipeline(x8: torch.Tensor, batch: int, amp: bool) -> dict[str, np.ndarray]:
        z_raw = encode(vae, x8, batch, amp, "encode")
        with autocast(device, amp):
            src_emb = torch.cat([metrics.clip.embed(from_uint8(c.to(device, non_blocking=True))).float() for c in x8.split(batch)])
        return score_outputs({"model": g}, z_raw, x8, src_emb, vae, conv, metrics, batch, amp)["model"]

    def timed(x8: torch.Tensor, batch: int, amp: bool) -> tuple[float, dict]:
        pipeline(x8[:batch], batch, amp)  # warm-up: cuDNN algorithm choice, allocator, threads
        _sync(device)
        t0 = time.perf_counter()
        res = pipeline(x8, batch, amp)
        _sync(device)
        return len(x8) / (time.perf_counter() - t0), res

    bf16_rate, bf16 = timed(images, batch_size, amp=True)
    fp32_rate, fp32 = timed(images, batch_size, amp=False)
    loop_rate, _ = timed(images[:loop_images], 1, amp=True)
    mu, sigma = gaussian(metrics.fid.inception(images))  # the sources' fp32 features: both FIDs' reference
    agree = agreement(fp32, bf16, mu, sigma)
    return {
        "eval_images": n_images, "eval_image_size": image_size, "eval_batch_size": batch_size,
        "eval_images_per_s": round(bf16_rate, 1),
        "eval_fp32_images_per_s": round(fp32_rate, 1),
        "eval_loop_images_per_s": round(loop_rate, 1),
        "eval_speedup": round(bf16_rate / loop_rate, 2),
        "eval_bf16_vs_fp32": {k: round(v, 6) for k, v in agree.items()},
    }
