"""Throughput of the evaluation pipeline, batched against a per-image loop of the same computations.

Real-size, randomly initialised networks (no downloads): the SD1.5 VAE architecture (diffusers
``AutoencoderKL``), a resnet9 generator, LPIPS-alex, CLIP ViT-B-32 and Inception-v3, on random
256x256 images: read as uint8 -> encode -> G -> decode -> uint8 -> LPIPS, CLIP (source and
generated), Inception features (with clean-fid's CPU resizer, as :mod:`lcgan.metrics` does).
"""
from __future__ import annotations

import time

import torch

from lcgan.metrics import Clip, Inception, Lpips
from lcgan.models import ResnetGenerator

SD15_VAE = dict(  # diffusers' SD1.5 VAE config (stable-diffusion-v1-5/vae/config.json)
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=512,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_eval(n_images: int, loop_images: int, batch_size: int, image_size: int, device: torch.device, seed: int = 0) -> dict:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    vae = AutoencoderKL(**SD15_VAE).to(device, dtype).eval().requires_grad_(False)
    g = ResnetGenerator(4, ngf=64, n_blocks=9, n_downsampling=2).to(device).eval().requires_grad_(False)
    lpips, clip = Lpips("alex", random=True, device=device), Clip("ViT-B-32", random=True, device=device)
    inception = Inception(random=True, device=device, workers=8)
    images = torch.randint(0, 256, (n_images, 3, image_size, image_size), dtype=torch.uint8)

    @torch.no_grad()
    def pipeline(x8: torch.Tensor) -> None:
        x = x8.to(device, non_blocking=True).float() / 127.5 - 1
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            z = vae.encode(x.to(dtype)).latent_dist.mean.float()  # raw latents
            y = vae.decode((g(z / 10).float() * 10).to(dtype)).sample.float().clamp(-1, 1)
        gen8 = ((y + 1) * 127.5).round().to(torch.uint8)
        gen = gen8.float() / 127.5 - 1
        lpips(gen, x)
        clip.embed(gen), clip.embed(x)
        inception(gen8)

    def timed(batches: list[torch.Tensor]) -> float:
        pipeline(batches[0])  # warm-up: cuDNN algorithm choice, allocator
        _sync(device)
        t0 = time.perf_counter()
        for b in batches:
            pipeline(b)
        _sync(device)
        return time.perf_counter() - t0

    batched_s = timed(list(images.split(batch_size)))
    loop_s = timed(list(images[:loop_images].split(1)))
    return {
        "eval_images": n_images, "eval_image_size": image_size, "eval_batch_size": batch_size,
        "eval_images_per_s": round(n_images / batched_s, 1),
        "eval_loop_images_per_s": round(loop_images / loop_s, 1),
        "eval_speedup": round((n_images / batched_s) / (loop_images / loop_s), 2),
    }
