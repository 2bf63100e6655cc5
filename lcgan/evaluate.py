"""Evaluate a checkpoint on two folders of RGB test images: ``python -m lcgan.evaluate``.

    python -m lcgan.evaluate checkpoint=PATH eval.testA_dir=DIR eval.testB_dir=DIR [vae=...] [eval.random_weights=true]

A metric network whose weights cannot be had is replaced by a random one for that metric alone (one line
naming its setting); ``summary.json`` says which metrics are meaningful (``metrics_meaningful``).

The metric networks are the components ``eval.lpips``, ``eval.clip`` and ``eval.fid`` (``_target_`` and settings,
conf/eval/*.yaml). On CUDA ``eval.amp=auto`` runs it in bf16 autocast (default ``none``: full precision), with
``eval.batch_size`` chosen for the GPU when null and Inception's resize on the GPU (``eval.fid.resize``). The
pipeline is :mod:`lcgan.scoring`'s, the one ``python -m lcgan.bench bench.eval.enabled=true`` times.

A->B runs G on the A images, B->A runs F on the B images: read (:mod:`lcgan.images`), encode,
raw -> model space (the checkpoint's :class:`~lcgan.latents.Convention`), translate, back to raw,
decode, quantise to uint8 (what the PNGs hold; every metric is computed on these). Against each
source image: ``content_lpips`` and ``content_clip`` (cosine of CLIP embeddings); against the
target folder: clean-fid FID and KID. The baselines are scored the same way: the round trip
(encode -> decode, no translation: the best content score the VAE allows and the FID of doing
nothing) and the closed-form latent maps of :mod:`lcgan.baselines` fitted on the training domains
(mean-shift, moment-matching, Gaussian optimal transport of latent vectors and of 3x3 patches; a
checkpoint from before the transport maps has the first two).
The model "beats" a baseline when its FID against the target folder is lower.

Outputs in ``eval.out_dir`` (default ``outputs/eval/{run}_{checkpoint stem}``, :func:`lcgan.rundir.checkpoint_tag`): ``metrics.csv``,
``summary.json`` (written last; ``complete: true``), ``gen/{A2B,B2A}/*.png`` (translations),
``round_trip/{A2B,B2A}/*.png`` (decode(encode(source))), ``fid/{A2B,B2A}_gen_stats.npz``,
``images/{A2B,B2A}_overview.png`` (source | translation | round trip of up to 16 test images, labelled)
and, with ``eval.save_images=true``, one such labelled panel per image with its scores: ``images/{A2B,B2A}/*.png``.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from lcgan import CONF_DIR, config
from lcgan.devices import auto_batch_size, resolve_device
from lcgan.images import list_images
from lcgan.layout import EVAL_ROOT, EvalFolder
from lcgan.rundir import checkpoint_tag
from lcgan.scoring import build_metrics, load_models, note_random, print_report, read_source, run


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.checkpoint`` on ``cfg.eval.testA_dir`` / ``testB_dir``; returns the summary."""
    config.check(cfg)
    ecfg, device = cfg.eval, resolve_device(cfg.device)
    translator, vae = load_models(cfg.checkpoint, cfg.get("vae"), device, ecfg.use_ema)
    metrics = build_metrics(ecfg, device, cfg.seed, ecfg.num_workers)
    note_random(metrics)
    batch = ecfg.batch_size or auto_batch_size(device, ecfg.image_size)
    ckpt = Path(translator.info["path"])
    out_dir = Path(ecfg.out_dir or EVAL_ROOT / checkpoint_tag(ckpt))
    folders = {"A": Path(ecfg.testA_dir), "B": Path(ecfg.testB_dir)}
    sources, refs = {}, {}
    for d, folder in folders.items():
        sources[d] = read_source(list_images(folder), folder, ecfg.image_size, ecfg.num_workers)
        r = metrics.fid.reference(folder, ecfg.image_size, batch, ecfg.num_workers)
        refs[d] = {**r, "dir": str(folder), "stats_dir": str(r["stats_dir"]) if r["stats_dir"] else None}
    compiled = compile_vae(vae, ecfg.compile, device, len(sources["A"].paths) + len(sources["B"].paths))
    print(f"lcgan.evaluate | {ckpt} ({translator.info['format']}, epoch {translator.info['epoch']}) | VAE {vae.describe()} "
          f"({translator.info['vae_from']}) | {translator.convention} | A {len(sources['A'].paths)} B {len(sources['B'].paths)} "
          f"images at {ecfg.image_size}px | device {device}, batch {batch}, amp {ecfg.amp}{', VAE compiled' if compiled else ''} | out {out_dir}")
    summary = run(translator, vae, metrics, sources, refs, out_dir, ecfg.image_size, batch, ecfg.amp, ecfg.latent_baselines,
                  ecfg.save_images, cfg.seed, fit_baselines_on_inputs=True, workers=ecfg.num_workers)
    print_report(summary)
    print(f"wrote {out_dir}/summary.json, metrics.csv, gen/, fid/" + (", images/" if ecfg.save_images else ""))
    log_to_tracker(cfg, summary, out_dir)
    return summary


# images (both directions) from which eval.compile=auto compiles the VAE: its one-time ~30 s compile repays itself from
# about here (one H200, experiments/bench/README.md: fp32 122 -> 222 images/s, bf16 autocast 144 -> 392)
COMPILE_FROM_IMAGES = 8000


def compile_vae(vae, setting, device, n_images: int) -> bool:
    """``eval.compile``: true, false, or auto (on CUDA, from :data:`COMPILE_FROM_IMAGES` images). Whether it compiled."""
    want = device.type == "cuda" and n_images >= COMPILE_FROM_IMAGES if setting == "auto" else bool(setting)
    if want and not vae.networks():
        if setting is True:  # auto passes over a VAE it cannot compile quietly
            print(f"WARNING: eval.compile=true: the VAE ({type(vae).__name__}) runs no torch network to compile "
                  "(an ONNX VAE: set vae.backend=torch)", file=sys.stderr)
        return False
    if want:
        vae.compile()
    return want


def log_to_tracker(cfg: DictConfig, summary: dict, out_dir: Path, max_images: int = 64) -> None:
    """``logger=wandb``: summary metrics and a table of source | generated pictures with per-image metrics."""
    if "logger" not in cfg:
        return
    logger = instantiate(cfg.logger, _partial_=True)(run_config=OmegaConf.to_container(cfg, resolve=True),
                                                     out_dir=str(out_dir), job_type="eval")
    try:
        flat = {f"{d}/{name}/{k}": v for d, res in summary["directions"].items() for name, sc in res.items()
                if isinstance(sc, dict) for k, v in sc.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        with open(EvalFolder(out_dir).metrics_csv, newline="") as f:
            rows = list(csv.DictReader(f))[:max_images]
        thumbs = lambda p: Image.open(p).convert("RGB").resize((128, 128))  # noqa: E731
        logger.log_eval({**flat, "meaningful": float(summary["meaningful"])}, rows,
                        [(thumbs(r["src_path"]), thumbs(r["gen_path"])) for r in rows])
        logger.finish(0)
    except BaseException:
        logger.finish(1)
        raise


@hydra.main(config_path=CONF_DIR, config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with config.user_errors():  # a bad setting: one line, no traceback
        evaluate(cfg)


if __name__ == "__main__":
    main()
