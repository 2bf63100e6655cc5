"""Evaluate a checkpoint on two folders of RGB test images: ``python -m lcgan.evaluate``.

    python -m lcgan.evaluate checkpoint=PATH eval.testA_dir=DIR eval.testB_dir=DIR [vae=...] [eval.random_weights=true]

A metric network whose weights cannot be had is replaced by a random one for that metric alone (one line
naming its setting); ``summary.json`` says which metrics are meaningful (``metrics_meaningful``).

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
import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from lcgan import CONF_DIR
from lcgan import checkpoint as ckpt_io
from lcgan import config
from lcgan.baselines import BASELINES as LATENT_BASELINES
from lcgan.baselines import LinearMap, channel_map, fit_all
from lcgan.fid_stats import reference_stats, to_uint8
from lcgan.images import IMAGE_SUFFIXES, list_images, read_batch
from lcgan.latents import Convention, LatentSpace, check_channels
from lcgan.metrics import Clip, build_metrics, fid_from_features, gaussian, kid
from lcgan.rundir import checkpoint_tag
from lcgan.translator import Translator, build_vae, load_translator, resolve_checkpoint
from lcgan.vae import ApproxVAE, resolve_device
from lcgan.vis import LINE, grid, save_png, with_notes

# direction -> (source domain, target domain, generator): G = g_ab (A->B), F = g_ba (B->A)
DIRECTIONS = {"A2B": ("A", "B", "g_ab"), "B2A": ("B", "A", "g_ba")}
BASELINES = ("round_trip", *LATENT_BASELINES)
FID_MIN_IMAGES = 300  # below this FID is strongly biased upwards (clean-fid/Chong & Forsyth 2020)
OVERVIEW_ROWS = 16  # test images in images/{direction}_overview.png, spread over the set


# ------------------------------------------------------------------------------------------- inputs


@dataclass
class Source:
    """The readable images of one domain, uint8 ``(N, 3, S, S)``, and the files that were skipped."""

    paths: list[Path]
    images: torch.Tensor
    names: list[str]  # output file stems, unique
    skipped: list[tuple[Path, str]]


def read_source(paths: list[Path], root: Path | None, size: int, workers: int) -> Source:
    if not paths:  # was an IndexError
        raise ValueError(f"{str(root) if root else 'the input'!r} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                         "point it at a folder of test images")
    x, ok, skipped = read_batch(paths, size, workers)
    if x is None:
        raise ValueError(f"none of the {len(paths)} images could be read (e.g. {skipped[0][1]})")
    names, seen = [], set()
    for p in ok:
        rel = p.relative_to(root) if root else Path(p.name)
        name = rel.with_suffix("").as_posix().replace("/", "__")
        name = name if name not in seen else f"{name}__{p.suffix.lstrip('.')}"
        seen.add(name)
        names.append(name)
    return Source(ok, to_uint8(x), names, skipped)


class EmbeddingCache:
    """CLIP embeddings of source images, one file per (model, tag, image size), keyed by file content."""

    def __init__(self, root: str | None, clip: Clip, image_size: int) -> None:
        safe = f"{clip.name}__{clip.tag}__{image_size}".replace("/", "_")
        self.path = Path(root) / f"{safe}.pt" if root else None
        self.table: dict[str, torch.Tensor] = {}
        if self.path and self.path.is_file():
            data = torch.load(self.path, map_location="cpu", weights_only=True)
            self.table = dict(zip(data["keys"], data["emb"]))
        self.computed = self.cached = 0

    def embed(self, clip: Clip, paths: list[Path], images: torch.Tensor, batch: int) -> torch.Tensor:
        keys = [hashlib.sha1(p.read_bytes()).hexdigest() for p in paths]
        todo = [i for i, k in enumerate(keys) if k not in self.table]
        for j in range(0, len(todo), batch):
            idx = todo[j : j + batch]
            for i, e in zip(idx, clip.embed(images[idx].float().div(127.5).sub(1))):
                self.table[keys[i]] = e
        self.computed += len(todo)
        self.cached += len(keys) - len(todo)
        if todo and self.path:
            buf = io.BytesIO()
            torch.save({"keys": list(self.table), "emb": torch.stack(list(self.table.values()))}, buf)
            ckpt_io.atomic_write_bytes(self.path, buf.getvalue())
        return torch.stack([self.table[k] for k in keys])


# --------------------------------------------------------------------------------------------- core


def latent_baselines(stats: dict, channels: int, where: str) -> dict[str, dict]:
    """Per-direction baseline maps of a checkpoint's ``domain_stats``: every closed-form map when it saved them
    (``maps``, plain lists checked by shape), else mean-shift and moment-matching from its channel statistics."""
    if "maps" in stats:
        return {d: {k: LinearMap.from_dict(m, channels, f"{where}: domain_stats.maps.{d}.{k}") for k, m in stats["maps"].get(d, {}).items()
                    if k in LATENT_BASELINES} for d in DIRECTIONS}  # fmt: skip
    a, b = ((torch.as_tensor(stats[f"{x}_mean"], dtype=torch.float32), torch.as_tensor(stats[f"{x}_std"], dtype=torch.float32)) for x in "ab")
    return {"A2B": {k: channel_map(k, a, b) for k in ("mean_shift", "moment_match")},
            "B2A": {k: channel_map(k, b, a) for k in ("mean_shift", "moment_match")}}


@torch.no_grad()
def encode(vae, images: torch.Tensor, batch: int, desc: str) -> torch.Tensor:
    """Raw latents of uint8 images, batched, on the CPU."""
    out = [vae.encode(images[i : i + batch].float().div(127.5).sub(1)).float().cpu()
           for i in tqdm(range(0, len(images), batch), desc=desc, leave=False)]  # fmt: skip
    return torch.cat(out)


@torch.no_grad()
def translate_direction(direction: str, src: Source, z_raw: torch.Tensor, src_emb: torch.Tensor, maps: dict, vae,
                        space: LatentSpace, conv: Convention, nets, gen_dir: Path, rt_dir: Path, batch: int, device) -> dict:  # fmt: skip
    """Every output kind (model and baselines) of one direction: per-image LPIPS/CLIP and Inception features.

    Writes the translations to ``gen_dir`` and the round trips (decode(encode(source))) to ``rt_dir``.
    """
    lp, clip, inception = nets
    per = {k: {"lpips": [], "clip": [], "feats": []} for k in maps}
    folders = {"model": gen_dir, "round_trip": rt_dir}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(0, len(z_raw), batch), desc=f"{direction}", leave=False):
        z = conv.raw_to_model(z_raw[i : i + batch].to(device), space)
        x_src = src.images[i : i + batch].float().div(127.5).sub(1)
        for kind, fn in maps.items():
            x = to_uint8(vae.decode(conv.model_to_raw(fn(z).float(), space)).cpu())
            xf = x.float().div(127.5).sub(1)
            per[kind]["lpips"].append(lp(xf, x_src))
            per[kind]["clip"].append((clip.embed(xf) * src_emb[i : i + batch]).sum(-1))
            per[kind]["feats"].append(inception(x))
            if kind in folders:
                for name, img in zip(src.names[i : i + batch], x):
                    Image.fromarray(img.permute(1, 2, 0).numpy()).save(folders[kind] / f"{name}.png")
    return {k: {"lpips": torch.cat(v["lpips"]).numpy(), "clip": torch.cat(v["clip"]).numpy(),
                "feats": np.concatenate(v["feats"])} for k, v in per.items()}  # fmt: skip


def set_scores(feats: np.ndarray, ref: dict | None, kid_cfg: tuple[int, int], seed: int) -> dict:
    """FID (and KID when reference features are at hand) of a set of features against a reference."""
    if ref is None:
        return {"fid": None, "kid_mean": None, "kid_std": None}
    k = kid(feats, ref["features"], *kid_cfg, seed=seed) if ref.get("features") is not None else None
    out = {"fid": fid_from_features(feats, ref["mu"], ref["sigma"]), "kid_mean": k and k[0], "kid_std": k and k[1]}
    if len(feats) < 2:
        out["fid_kind"] = "one image: Frechet distance of a point mass at its features to the reference Gaussian"
    return out


def run(translator: Translator, vae, nets, sources: dict[str, Source], refs: dict[str, dict | None], out_dir: Path,
        ecfg: dict, seed: int, fit_baselines_on_inputs: bool) -> dict:  # fmt: skip
    """Translate both domains, score every output kind, write every output; returns the summary."""
    t0 = time.perf_counter()
    device = next(translator.g_ab.parameters()).device
    conv, space, batch = translator.convention, vae.space, ecfg["batch_size"]
    check_channels(translator.channels, space, f"checkpoint {translator.info['path']}")
    side = ecfg["image_size"] // space.downsample
    if ecfg["image_size"] % space.downsample or side % translator.factor:
        raise ValueError(f"eval.image_size={ecfg['image_size']} gives {side}x{side} latents; it must be a multiple of "
                         f"{space.downsample * translator.factor} for this VAE and generator")  # fmt: skip
    for folder in (out_dir / "gen", out_dir / "round_trip", out_dir / "images", out_dir / "fid"):  # an earlier run's outputs never mix with these
        for f in [*folder.rglob("*.png"), *folder.glob("*.npz")] if folder.exists() else []:
            f.unlink()
    for f in ("summary.json", "metrics.csv"):
        (out_dir / f).unlink(missing_ok=True)
    lp, clip, inception = nets
    emb_cache = EmbeddingCache(ecfg["clip"].get("embedding_cache"), clip, ecfg["image_size"])
    z_raw = {d: encode(vae, s.images, batch, f"encode {d}") for d, s in sources.items()}
    src_emb = {d: emb_cache.embed(clip, s.paths, s.images, batch) for d, s in sources.items()}

    stats, fit_on = translator.domain_stats, "checkpoint domain_stats (training domains)"
    use_latent = ecfg["latent_baselines"] and (stats is not None or (fit_baselines_on_inputs and len(z_raw) == 2))
    if not use_latent:
        maps_by_dir = {"A2B": {}, "B2A": {}}
    elif stats is None:  # no training-domain statistics in the checkpoint: fit on the test folders themselves
        ms = {d: conv.raw_to_model(z, space) for d, z in z_raw.items()}
        maps_by_dir = fit_all(ms["A"], ms["B"])
        stats = {f"{d.lower()}_{k}": getattr(ms[d].transpose(0, 1).flatten(1), k)(1) for d in "AB" for k in ("mean", "std")}
        fit_on = "the encoded test folders eval.testA_dir / eval.testB_dir (the checkpoint carries no training-domain stats)"
    else:
        maps_by_dir = latent_baselines(stats, translator.channels, f"checkpoint {translator.info['path']}")
    random_nets = [n for n, net in (("lpips", lp), ("clip", clip), ("inception", inception)) if net.random]
    approx = "the VAE is the approx linear preview, not a real decoder" if isinstance(vae, ApproxVAE) else None
    # per metric: its network's reason (random / no weights) and the VAE's; the overall list is their union
    metric_reasons = {m: [r for r in (net.not_meaningful, approx) if r] for m, net in (("lpips", lp), ("clip", clip), ("fid", inception))}
    not_meaningful = list(dict.fromkeys(r for reasons in metric_reasons.values() for r in reasons))
    rows, directions = [], {}
    for direction, (src_d, tgt_d, gen_name) in DIRECTIONS.items():
        if src_d not in sources:
            continue
        g = getattr(translator, gen_name)
        maps = {"model": g, "round_trip": lambda z: z, **maps_by_dir[direction]}
        res = translate_direction(direction, sources[src_d], z_raw[src_d], src_emb[src_d], maps, vae, space, conv, nets,
                                  out_dir / "gen" / direction, out_dir / "round_trip" / direction, batch, device)  # fmt: skip
        ref = refs.get(tgt_d)
        kid_cfg = (ecfg["fid"]["kid_subsets"], ecfg["fid"]["kid_subset_size"])
        scores = {k: {"content_lpips": float(r["lpips"].mean()), "content_clip": float(r["clip"].mean()),
                      **set_scores(r["feats"], ref, kid_cfg, seed)} for k, r in res.items()}  # fmt: skip
        mu, sigma = gaussian(res["model"]["feats"])
        buf = io.BytesIO()
        np.savez(buf, mu=mu, sigma=sigma, count=len(res["model"]["feats"]), dim=mu.shape[0])
        ckpt_io.atomic_write_bytes(out_dir / "fid" / f"{direction}_gen_stats.npz", buf.getvalue())
        fid_m = scores["model"]["fid"]
        directions[direction] = {
            "n_images": len(sources[src_d].paths),
            "reference": None if ref is None else {"dir": ref["dir"], "count": ref["count"], "stats_dir": ref.get("stats_dir")},
            **scores,
            "beats": {b: (None if fid_m is None or scores[b]["fid"] is None else fid_m < scores[b]["fid"]) for b in scores if b != "model"},
        }
        for i, (p, name) in enumerate(zip(sources[src_d].paths, sources[src_d].names)):
            row = {"direction": direction, "src_path": str(p), "gen_path": str(out_dir / "gen" / direction / f"{name}.png"),
                   "content_lpips": res["model"]["lpips"][i], "content_clip": res["model"]["clip"][i]}  # fmt: skip
            for k in res:
                if k != "model":
                    row[f"{k}_lpips"], row[f"{k}_clip"] = res[k]["lpips"][i], res[k]["clip"][i]
            rows.append({k: (f"{v:.6f}" if isinstance(v, (float, np.floating)) else v) for k, v in row.items()})
        notes = [f"NOT MEANINGFUL: {why}" for why in not_meaningful]
        save_overview(sources[src_d], out_dir, direction, notes)
        if ecfg["save_images"]:
            save_pictures(sources[src_d], out_dir, direction, res, scores, random_nets, notes)
    write_csv(rows, out_dir / "metrics.csv")
    summary = {
        "complete": True,
        "meaningful": not not_meaningful,
        "not_meaningful_because": not_meaningful,
        "metrics_meaningful": {m: not r for m, r in metric_reasons.items()},  # fid covers KID (the same Inception)
        "metrics_not_meaningful_because": {m: "; ".join(r) or None for m, r in metric_reasons.items()},
        "checkpoint": translator.info,
        "vae": vae.describe(),
        "convention": conv.as_dict(),
        "latent_space": space.as_dict(),
        "image_size": ecfg["image_size"],
        "counts": {d: {"evaluated": len(s.paths), "skipped": len(s.skipped)} for d, s in sources.items()},
        "skipped": [{"domain": d, "path": str(p), "error": e} for d, s in sources.items() for p, e in s.skipped],
        "metric_networks": {"lpips": {"net": lp.net, "weights": lp.source}, "clip": {"model": clip.name, "pretrained": clip.tag},
                            "inception": {"weights": inception.source, "protocol": "clean-fid 0.1.35 clean mode"}},  # fmt: skip
        "latent_baselines": {"fit_on": fit_on if use_latent else None,
                             "stats_model_space": {k: [float(x) for x in v] for k, v in stats.items() if k != "maps"} if use_latent else None},  # fmt: skip
        "beats_means": "model FID against the target folder lower than the baseline's",
        "directions": directions,
        "fid_warning": (f"FID is biased upwards below ~{FID_MIN_IMAGES} images; compare only runs on the same test sets"
                        if min(len(s.paths) for s in sources.values()) < FID_MIN_IMAGES else None),  # fmt: skip
        "cache": {"clip_source_embeddings_computed": emb_cache.computed, "clip_source_embeddings_cached": emb_cache.cached},
        "time_sec": round(time.perf_counter() - t0, 2),
    }
    ckpt_io.atomic_write_bytes(out_dir / "summary.json", json.dumps(summary, indent=2, default=_json).encode())
    return summary


def _json(v):
    return v.tolist() if isinstance(v, np.ndarray) else float(v) if isinstance(v, np.floating) else str(v)


def write_csv(rows: list[dict], path: Path) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    ckpt_io.atomic_write_bytes(path, buf.getvalue().encode())


def panel_columns(src: Source, out_dir: Path, direction: str, idx: list[int]) -> tuple[list[torch.Tensor], list[str]]:
    """Columns source | translation | round trip (uint8) of the images ``idx``, and their labels."""
    src_d, _, gen_name = DIRECTIONS[direction]
    read = lambda folder: torch.stack([torch.from_numpy(np.array(Image.open(folder / f"{src.names[i]}.png").convert("RGB"))).permute(2, 0, 1)
                                       for i in idx])  # noqa: E731
    gen, rt = read(out_dir / "gen" / direction), read(out_dir / "round_trip" / direction)
    g = {"g_ab": "G", "g_ba": "F"}[gen_name]
    return [src.images[idx], gen, rt], [f"source {src_d}", f"translation {g}({src_d})", "round trip"]


ROUND_TRIP_NOTE = "round trip = VAE decode(encode(source)), no generator: the best the VAE allows"


def save_overview(src: Source, out_dir: Path, direction: str, notes: list[str]) -> None:
    """``images/{direction}_overview.png``: up to OVERVIEW_ROWS test images, one per row, labelled columns."""
    n = len(src.names)
    idx = torch.linspace(0, n - 1, min(n, OVERVIEW_ROWS)).long().tolist()
    columns, labels = panel_columns(src, out_dir, direction, idx)
    lines = [f"{direction}: {len(idx)} of {n} test images", ROUND_TRIP_NOTE, *notes]
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    save_png(with_notes(grid(columns, labels), lines), out_dir / "images" / f"{direction}_overview.png")


def save_pictures(src: Source, out_dir: Path, direction: str, res: dict, scores: dict, random_nets: list[str], notes: list[str]) -> None:
    """One panel per image: source | translation | round trip, labelled, over a table of their scores."""
    folder = out_dir / "images" / direction
    folder.mkdir(parents=True, exist_ok=True)
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    rnd = lambda net: " (random net)" if net in random_nets else ""  # noqa: E731
    for i, name in enumerate(src.names):
        columns, labels = panel_columns(src, out_dir, direction, [i])
        image = grid(columns, labels)
        table = [("scores of", "translation", "round trip"),
                 (f"LPIPS to source{rnd('lpips')}", fmt(float(res["model"]["lpips"][i])), fmt(float(res["round_trip"]["lpips"][i]))),
                 (f"CLIP cos to source{rnd('clip')}", fmt(float(res["model"]["clip"][i])), fmt(float(res["round_trip"]["clip"][i]))),
                 (f"FID of the set{rnd('inception')}", fmt(scores["model"]["fid"]), fmt(scores["round_trip"]["fid"]))]  # fmt: skip
        canvas = Image.new("RGB", (image.width, image.height + len(table) * LINE + 6), "white")
        canvas.paste(image, (0, 0))
        draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
        col_x = (4, image.width // 2, image.width * 3 // 4)  # the name gets half the width: it may say "(random net)"
        for r, cells in enumerate(table):
            for x, text in zip(col_x, cells):
                draw.text((x, image.height + 4 + r * LINE), text, fill="black", font=font)
        save_png(with_notes(canvas, [ROUND_TRIP_NOTE, *notes], color="black"), folder / f"{name}.png")


def print_report(summary: dict) -> None:
    print(f"\nlcgan.evaluate | {summary['checkpoint']['path']} | VAE {summary['vae']['class']} | image_size {summary['image_size']}")
    print(f"{'direction':9} {'output':13} {'lpips':>8} {'clip':>8} {'fid':>10} {'kid':>10}")
    fmt = lambda v, p: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for d, r in summary["directions"].items():
        for k in ("model", *BASELINES):
            if k in r:
                print(f"{d:9} {k:13} {r[k]['content_lpips']:8.4f} {r[k]['content_clip']:8.4f} {fmt(r[k]['fid'], 2):>10} "
                      f"{fmt(r[k]['kid_mean'], 4):>10}")  # fmt: skip
    yes_no = lambda ok: "yes" if ok else "NO"  # noqa: E731
    print("meaningful: " + ", ".join(f"{m} {yes_no(ok)}" for m, ok in summary["metrics_meaningful"].items()) + " (fid includes kid)")
    for line in summary["not_meaningful_because"]:
        print(f"NOT MEANINGFUL: {line}")
    if summary["fid_warning"]:
        print(f"WARNING: {summary['fid_warning']} (A: {summary['counts'].get('A', {}).get('evaluated')}, "
              f"B: {summary['counts'].get('B', {}).get('evaluated')} images)")  # fmt: skip
    for s in summary["skipped"]:
        print(f"skipped: {s['error']}")


def setup(cfg: DictConfig) -> tuple[Translator, object, tuple, dict, torch.device]:
    """Checkpoint, VAE and metric networks from a composed ``eval``/``translate`` config; loud warnings."""
    device = resolve_device(cfg.device)
    ckpt = resolve_checkpoint(cfg.checkpoint)
    translator = load_translator(ckpt, device, use_ema=cfg.eval.use_ema)
    vae, vae_from = build_vae(cfg.get("vae"), translator, device)
    translator.info["vae_from"] = vae_from
    ecfg = OmegaConf.to_container(cfg.eval, resolve=True)
    if isinstance(vae, ApproxVAE):
        print("!" * 100 + "\nWARNING: the VAE is `approx`, a linear latent preview (the training default), not a decoder: "
              "metrics through it are NOT meaningful. Pass the VAE the latents came from, e.g. vae=sd15 or "
              "vae=vaelight vae.encoder_path=E vae.decoder_path=D\n" + "!" * 100)  # fmt: skip
    nets = build_metrics(ecfg["lpips"], ecfg["clip"], ecfg["fid"], device, cfg.seed, ecfg["num_workers"])
    randoms = [n for n, net in zip(("LPIPS", "CLIP", "Inception"), nets) if net.random]
    if randoms:  # configured (eval.random_weights, eval.*.random) or standing in for missing weights (a WARNING above)
        print(f"NOTE: randomly initialised {', '.join(randoms)}: their scores are NOT meaningful (summary.json: metrics_meaningful)")
    return translator, vae, nets, ecfg, device


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.checkpoint`` on ``cfg.eval.testA_dir`` / ``testB_dir``; returns the summary."""
    config.check(cfg)
    translator, vae, nets, ecfg, device = setup(cfg)
    ckpt = Path(translator.info["path"])
    out_dir = Path(ecfg["out_dir"] or Path("outputs/eval") / checkpoint_tag(ckpt))
    folders = {"A": Path(ecfg["testA_dir"]), "B": Path(ecfg["testB_dir"])}
    sources, refs = {}, {}
    for d, folder in folders.items():
        sources[d] = read_source(list_images(folder), folder, ecfg["image_size"], ecfg["num_workers"])
        f = ecfg["fid"]
        r = reference_stats(folder, nets[2], ecfg["image_size"], f["stats_root"], f["fallback_root"], ecfg["batch_size"], ecfg["num_workers"])
        refs[d] = {**r, "dir": str(folder), "stats_dir": str(r["stats_dir"]) if r["stats_dir"] else None}
    print(f"lcgan.evaluate | {ckpt} ({translator.info['format']}, epoch {translator.info['epoch']}) | VAE {vae.describe()} "
          f"({translator.info['vae_from']}) | {translator.convention} | A {len(sources['A'].paths)} B {len(sources['B'].paths)} "
          f"images at {ecfg['image_size']}px | device {device} | out {out_dir}")  # fmt: skip
    summary = run(translator, vae, nets, sources, refs, out_dir, ecfg, cfg.seed, fit_baselines_on_inputs=True)
    print_report(summary)
    print(f"wrote {out_dir}/summary.json, metrics.csv, gen/, fid/" + (", images/" if ecfg["save_images"] else ""))
    log_to_tracker(cfg, summary, out_dir)
    return summary


def log_to_tracker(cfg: DictConfig, summary: dict, out_dir: Path, max_images: int = 64) -> None:
    """``logger=wandb``: summary metrics and a table of source | generated pictures with per-image metrics."""
    from hydra.utils import instantiate

    if "logger" not in cfg:
        return
    logger = instantiate(cfg.logger, _partial_=True)(run_config=OmegaConf.to_container(cfg, resolve=True),
                                                     out_dir=str(out_dir), job_type="eval")
    try:
        flat = {f"{d}/{name}/{k}": v for d, res in summary["directions"].items() for name, sc in res.items()
                if isinstance(sc, dict) for k, v in sc.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        with open(out_dir / "metrics.csv", newline="") as f:
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
    evaluate(cfg)


if __name__ == "__main__":
    main()
