"""Translate one image (or one of each domain) with the evaluation's metrics: ``python -m lcgan.translate``.

    python -m lcgan.translate checkpoint=PATH image=PHOTO.jpg              # the same image through G and F
    python -m lcgan.translate checkpoint=PATH imageA=CAT.jpg imageB=DOG.jpg

Everything :mod:`lcgan.evaluate` computes, on one image per direction: content LPIPS/CLIP for the
model and the round trip (and mean-shift/moment-matching when the checkpoint carries training
domain statistics), and FID when reference statistics of the target folder already exist
(``eval.testB_dir`` / ``eval.testA_dir``, written by ``python -m lcgan.fid_stats DIR``). FID of one
image is the Frechet distance of a point mass at its features to the reference Gaussian: only
comparable with other single images (e.g. the round-trip row beside it).
Outputs: ``outputs/eval_single/{checkpoint stem}/{image tag}/`` (``metrics.csv``, ``summary.json``,
``gen/``, ``fid/``, ``images/``).
"""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lcgan import CONF_DIR, config
from lcgan.evaluate import print_report, read_source, run, setup
from lcgan.fid_stats import FALLBACK_ROOT, find_stats


def translate(cfg: DictConfig) -> dict:
    config.check(cfg)
    if cfg.image and (cfg.imageA or cfg.imageB):
        raise ValueError("give image=PATH (both directions) or imageA=/imageB=, not both")
    paths = {"A": cfg.image or cfg.imageA, "B": cfg.image or cfg.imageB}
    paths = {d: Path(p) for d, p in paths.items() if p}
    if not paths:
        raise ValueError("nothing to translate: pass image=PATH, or imageA=PATH and/or imageB=PATH")
    translator, vae, nets, ecfg, device = setup(cfg)
    ckpt = Path(translator.info["path"])
    tag = "__".join(dict.fromkeys(p.stem for p in paths.values()))
    out_dir = Path(ecfg["out_dir"] or Path("outputs/eval_single") / ckpt.stem / tag)
    sources = {d: read_source([p], None, ecfg["image_size"], 1) for d, p in paths.items()}
    refs = {}
    for d, key in (("A", "testA_dir"), ("B", "testB_dir")):
        folder = ecfg[key]
        found = find_stats(folder, ecfg["image_size"], nets[2], ecfg["fid"]["stats_root"], ecfg["fid"]["fallback_root"] or FALLBACK_ROOT) if folder else None
        refs[d] = None if found is None else {**found, "dir": folder}
        if folder and found is None:
            print(f"no reference statistics for eval.{key}={folder!r} at image_size {ecfg['image_size']}; FID skipped "
                  f"(write them with: python -m lcgan.fid_stats {folder} --image-size {ecfg['image_size']})")  # fmt: skip
    print(f"lcgan.translate | {ckpt} | {', '.join(f'{d}: {p}' for d, p in paths.items())} | device {device} | out {out_dir}")
    summary = run(translator, vae, nets, sources, refs, out_dir, ecfg, cfg.seed, fit_baselines_on_inputs=False)
    print_report(summary)
    print(f"wrote {out_dir}/summary.json, metrics.csv, gen/, fid/" + (", images/" if ecfg["save_images"] else ""))
    return summary


@hydra.main(config_path=CONF_DIR, config_name="translate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    translate(cfg)


if __name__ == "__main__":
    main()
