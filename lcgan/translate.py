"""Translate images with a checkpoint: ``python -m lcgan.translate``.

    python -m lcgan.translate checkpoint=PATH input=photos/ direction=A2B    # a folder (or one image) through G
    python -m lcgan.translate checkpoint=PATH input=dog.jpg direction=B2A size=512
    python -m lcgan.translate metrics=true checkpoint=PATH image=PHOTO.jpg   # one image with the evaluation's metrics

Plain mode (the default) builds no metric network: read each image at its own size (or its shorter
side scaled to ``size``, aspect ratio kept), pad it by reflection to a multiple of the VAE's and
generator's downsampling, encode, translate, decode, crop back to the input's size and write a PNG.
Images of one size share a batch. Outputs: ``outputs/translate/{run}_{checkpoint stem}/{input name}_{direction}/``
(the input folder's layout, ``.png``), or ``output_dir``.

``metrics=true``: everything :mod:`lcgan.evaluate` computes, on one image per direction (``image=`` through
both generators, or ``imageA=`` / ``imageB=``): content LPIPS/CLIP for the model and the round trip (and the
latent baselines when the checkpoint carries training domain statistics), and FID when reference statistics
of the target folder already exist (``eval.testB_dir`` / ``eval.testA_dir``, written by ``python -m
lcgan.fid_stats DIR``). FID of one image is the Frechet distance of a point mass at its features to the
reference Gaussian: only comparable with other single images (e.g. the round-trip row beside it).
Outputs: ``outputs/eval_single/{run}_{checkpoint stem}/{image tag}/`` (``metrics.csv``, ``summary.json``,
``gen/``, ``round_trip/``, ``fid/``, ``images/``).
"""
from __future__ import annotations

import time
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image

from lcgan import CONF_DIR, config
from lcgan.devices import amp_enabled, autocast, resolve_device
from lcgan.images import list_images, read_rgb, to_uint8
from lcgan.latents import Convention, check_channels
from lcgan.layout import EVAL_SINGLE_ROOT, TRANSLATE_ROOT
from lcgan.rundir import checkpoint_tag
from lcgan.scoring import DIRECTIONS, build_metrics, load_models, note_random, print_report, read_source, run
from lcgan.vis import save_png


def translate(cfg: DictConfig) -> dict:
    """Plain translation of ``cfg.input`` (``metrics=false``), or one image with every metric (``metrics=true``)."""
    config.check(cfg)
    return translate_with_metrics(cfg) if cfg.metrics else translate_files(cfg)


# ---------------------------------------------------------------------------------- plain mode


def resize_shorter(x: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) with its shorter side scaled to ``size``, aspect ratio kept (bicubic, antialiased)."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    out = F.interpolate(x[None], size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp(-1, 1)


@torch.no_grad()
def translate_batch(g, vae, convention: Convention, x: torch.Tensor, multiple: int, device: torch.device, post=None) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> translated (B, 3, H, W): padded to a multiple of ``multiple``, cropped back;
    ``post``: the generator's pixel post-filter (``train.post_filter``), applied to the decoded images."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    mode = "reflect" if ph < h and pw < w else "replicate"  # reflection needs the image to be larger than the pad
    z = convention.raw_to_model(vae.encode(F.pad(x, pad, mode=mode)).to(device), vae.space)
    y = vae.decode(convention.model_to_raw(g(z).float(), vae.space))
    y = (post(y.to(device)).clamp(-1, 1) if post is not None else y).cpu()
    return y[..., pad[2] : pad[2] + h, pad[0] : pad[0] + w]


def output_names(files: list[Path], root: Path | None) -> list[Path]:
    """The input folder's layout with ``.png`` names; ``x.jpg`` beside ``x.png`` becomes ``x.jpg.png``."""
    rel = [f.relative_to(root) if root else Path(f.name) for f in files]
    stems = [r.with_suffix("") for r in rel]
    return [r.with_suffix(".png") if stems.count(s) == 1 else r.with_name(r.name + ".png") for r, s in zip(rel, stems)]


def translate_files(cfg: DictConfig) -> dict:
    """``cfg.input`` (a folder or one image) through one generator; no metric network is built."""
    for key in ("image", "imageA", "imageB"):
        if cfg[key]:
            raise ValueError(f"{key}={cfg[key]!r} is the metric mode's: add metrics=true, "
                             f"or translate files with input={cfg[key]} direction=A2B|B2A")
    if not cfg.input:
        raise ValueError("nothing to translate: pass input=FOLDER or input=IMAGE, and direction=A2B (G) or B2A (F)")
    src = Path(cfg.input)
    if not src.exists():
        raise FileNotFoundError(f"input={str(src)!r} does not exist; pass a folder of images or one image")
    root = src if src.is_dir() else None
    files = list_images(src) if root else [src]
    if not files:
        raise ValueError(f"input={str(src)!r} holds no images")
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    translator, vae = load_models(cfg.checkpoint, cfg.get("vae"), device, cfg.eval.use_ema)
    ckpt = Path(translator.info["path"])
    check_channels(translator.channels, vae.space, f"checkpoint {ckpt}")
    g, post = getattr(translator, DIRECTIONS[cfg.direction][2]), translator.pixel_filter(DIRECTIONS[cfg.direction][2])
    multiple = vae.space.downsample * translator.factor
    out_dir = Path(cfg.output_dir or TRANSLATE_ROOT / checkpoint_tag(ckpt) / f"{src.stem}_{cfg.direction}")
    print(f"lcgan.translate | {ckpt} | {cfg.direction} | {len(files)} image(s) from {src} | device {device} | out {out_dir} "
          f"| no metric networks built (metrics=false)")

    images, skipped = {}, []
    for f, name in zip(files, output_names(files, root)):
        try:
            x = read_rgb(f, None)
        except ValueError as e:
            skipped.append((f, str(e)))
            print(f"skipped {e}")
            continue
        images[name] = resize_shorter(x, cfg.size) if cfg.size else x
    by_size: dict[tuple, list[Path]] = {}
    for name, x in images.items():
        by_size.setdefault(tuple(x.shape[-2:]), []).append(name)
    written = []
    for names in by_size.values():
        for i in range(0, len(names), cfg.batch_size):
            chunk = names[i : i + cfg.batch_size]
            with autocast(device, amp_enabled(cfg.eval.amp, device)):
                y = translate_batch(g, vae, translator.convention, torch.stack([images[n] for n in chunk]), multiple, device, post)
            for name, pixels in zip(chunk, to_uint8(y).permute(0, 2, 3, 1).cpu()):
                (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
                save_png(Image.fromarray(pixels.numpy()), out_dir / name)
                written.append(str(out_dir / name))
    seconds = time.perf_counter() - t0
    print(f"wrote {len(written)} image(s) to {out_dir} in {seconds:.1f} s" + (f"; skipped {len(skipped)} unreadable" if skipped else ""))
    return {"out_dir": str(out_dir), "written": written, "skipped": [str(f) for f, _ in skipped], "time_sec": round(seconds, 2)}


# ---------------------------------------------------------------------------------- metrics=true


def translate_with_metrics(cfg: DictConfig) -> dict:
    if cfg.input:
        raise ValueError(f"input={cfg.input!r} is the plain mode's: drop metrics=true, or pass image= / imageA= / imageB=")
    if cfg.image and (cfg.imageA or cfg.imageB):
        raise ValueError("give image=PATH (both directions) or imageA=/imageB=, not both")
    paths = {"A": cfg.image or cfg.imageA, "B": cfg.image or cfg.imageB}
    paths = {d: Path(p) for d, p in paths.items() if p}
    if not paths:
        raise ValueError("nothing to translate: pass image=PATH, or imageA=PATH and/or imageB=PATH")
    ecfg, device = cfg.eval, resolve_device(cfg.device)
    translator, vae = load_models(cfg.checkpoint, cfg.get("vae"), device, ecfg.use_ema)
    metrics = build_metrics(ecfg, device, cfg.seed, ecfg.num_workers)
    note_random(metrics)
    ckpt = Path(translator.info["path"])
    tag = "__".join(dict.fromkeys(p.stem for p in paths.values()))
    out_dir = Path(ecfg.out_dir or EVAL_SINGLE_ROOT / checkpoint_tag(ckpt) / tag)
    sources = {d: read_source([p], None, ecfg.image_size, 1) for d, p in paths.items()}
    refs = {}
    for d, key in (("A", "testA_dir"), ("B", "testB_dir")):
        folder = ecfg[key]
        found = metrics.fid.find_reference(folder, ecfg.image_size) if folder else None
        refs[d] = None if found is None else {**found, "dir": folder}
        if folder and found is None:
            print(f"no reference statistics for eval.{key}={folder!r} at image_size {ecfg.image_size}; FID skipped "
                  f"(write them with: python -m lcgan.fid_stats {folder} --image-size {ecfg.image_size})")
    print(f"lcgan.translate | {ckpt} | {', '.join(f'{d}: {p}' for d, p in paths.items())} | device {device} | out {out_dir}")
    summary = run(translator, vae, metrics, sources, refs, out_dir, ecfg.image_size, 1, ecfg.amp, ecfg.latent_baselines,
                  ecfg.save_images, cfg.seed, fit_baselines_on_inputs=False)
    print_report(summary)
    print(f"wrote {out_dir}/summary.json, metrics.csv, gen/, round_trip/, fid/, images/")
    return summary


@hydra.main(config_path=CONF_DIR, config_name="translate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with config.user_errors():  # a bad setting: one line, no traceback
        translate(cfg)


if __name__ == "__main__":
    main()
