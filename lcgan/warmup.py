"""The child of :class:`lcgan.compile_cache.BackgroundCompile`: build the run's step (its config on stdin),
compiled, and run it on random latents of the run's shape, which fills torch's compile caches.

    python -m lcgan.warmup --shape 4,32,32 [--flip] < config.yaml
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from omegaconf import DictConfig, OmegaConf

from lcgan.build import build_gan, build_training, memory_format
from lcgan.data import UnpairedSampler, place
from lcgan.devices import resolve_device


def warm(cfg: DictConfig, shape: tuple[int, int, int], flip: bool, steps: int = 3) -> float:
    """Build the run's step as ``lcgan.train`` does, compiled, and run it on random latents; the seconds it took."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    cfg.train.compile = True
    gan = build_gan(cfg.model, shape[0], train_cfg=cfg.train).to(device)
    step = build_training(cfg, gan, device).step
    layout = memory_format(cfg.train.channels_last, device)
    n = 2 * cfg.train.batch_size
    sampler = UnpairedSampler(*(place(torch.randn(n, *shape).contiguous(memory_format=layout), device) for _ in range(2)),
                              cfg.train.batch_size, flip)
    order = sampler.epoch()
    for i in range(steps):
        step(*sampler.batch(order, i % sampler.steps_per_epoch, device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Compile lcgan.train's step once to fill torch's compile caches (the run's config on stdin).")
    ap.add_argument("--shape", required=True, help="latent shape C,H,W")
    ap.add_argument("--flip", action="store_true", help="the run flips batches (data.flip)")
    args = ap.parse_args(argv)
    shape = tuple(int(x) for x in args.shape.split(","))
    cfg = OmegaConf.create(sys.stdin.read())
    print(f"lcgan.warmup: compiled the step for latents {shape} in {warm(cfg, shape, args.flip):.1f} s", flush=True)


if __name__ == "__main__":
    main()
