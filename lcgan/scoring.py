"""Score a checkpoint's translations: the evaluation that ``lcgan.evaluate`` runs on two folders and
``lcgan.translate metrics=true`` on single images (both commands import it; it imports neither).

A->B runs G on the A images, B->A runs F on the B images: uint8 pixels -> encode -> raw -> model space
(the checkpoint's :class:`~lcgan.latents.Convention`) -> translate -> raw -> decode -> uint8 (what the PNGs
hold; every metric is computed on these). Against each source image: ``content_lpips`` and ``content_clip``
(cosine of CLIP embeddings); against the target folder: FID and KID (:class:`lcgan.fid.Fid`). The
baselines are scored the same way: the round trip (decode(encode(source)), no translation) and the
closed-form latent maps of :mod:`lcgan.baselines`.

Fast on a GPU without changing what is measured: bf16 autocast (``amp``, agreement with fp32 measured by
``lcgan.bench bench.eval.enabled=true``), channels-last weights, cuDNN's autotuner, scores gathered on the
device and copied once per direction, Inception's resize on the device (``eval.fid.resize=torch``), and the
CPU's share (PNG writing, clean-fid's own resize with ``eval.fid.resize=pil``) done by worker threads on pinned
copies while the GPU computes the next batch. ``lcgan.bench`` times this same code, stage by stage too.
"""
from __future__ import annotations

import csv
import io
import json
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image
from tqdm.auto import tqdm

from lcgan import checkpoint as ckpt_io
from lcgan.baselines import BASELINES as LATENT_BASELINES
from lcgan.baselines import LinearMap, channel_map, channel_stats, fit_all
from lcgan.devices import amp_enabled, autocast, channels_last
from lcgan.fid import Fid, gaussian
from lcgan.images import IMAGE_SUFFIXES, from_uint8, read_batch, to_uint8
from lcgan.latents import Convention, check_channels
from lcgan.layout import EvalFolder
from lcgan.metrics import Clip, Lpips, MissingWeightsError
from lcgan.translator import Translator, build_vae, load_translator, resolve_checkpoint
from lcgan.vae import ApproxVAE
from lcgan.vis import save_comparison

# direction -> (source domain, target domain, generator): G = g_ab (A->B), F = g_ba (B->A)
DIRECTIONS = {"A2B": ("A", "B", "g_ab"), "B2A": ("B", "A", "g_ba")}
BASELINES = ("round_trip", *LATENT_BASELINES)
FID_MIN_IMAGES = 300  # below this FID is strongly biased upwards (clean-fid/Chong & Forsyth 2020)
OVERVIEW_ROWS = 16  # test images in images/{direction}_overview.png, spread over the set
ROUND_TRIP_NOTE = "round trip = VAE decode(encode(source)), no generator: the best the VAE allows"
PIPELINE_DEPTH = 3  # batches whose CPU work (PNGs, Inception resize) may run behind the GPU: bounds pinned memory
PNG_COMPRESS_LEVEL = 1  # zlib level of the written PNGs (lossless at any level): 1 writes 3.2x faster than PIL's 6, files 3.6% larger (256 px photos)
# eval block -> (metric name in messages, the setting that supplies its weights): named when a random network stands in
METRIC_SETTINGS = {"lpips": ("content_lpips", "eval.lpips.backbone_path"),
                   "clip": ("content_clip", "eval.clip.pretrained / eval.clip.cache_dir"),
                   "fid": ("FID/KID", "eval.fid.inception_path")}


# ------------------------------------------------------------------------------------------- metric networks


@dataclass
class Metrics:
    """The metric networks of one evaluation, built from the ``eval.lpips`` / ``eval.clip`` / ``eval.fid`` components."""

    lpips: Lpips
    clip: Clip
    fid: Fid

    def by_name(self) -> dict[str, Lpips | Clip | Fid]:
        return {"lpips": self.lpips, "clip": self.clip, "fid": self.fid}


def build_metrics(eval_cfg: DictConfig, device: torch.device, seed: int, workers: int) -> Metrics:
    """Each metric component of ``eval_cfg`` (``_target_`` and its settings) with the run-time values; a real one
    whose weights cannot be had is replaced by a random one, with one line naming the setting that supplies them,
    so the other metrics stay real."""
    built = {}
    for i, (key, (name, setting)) in enumerate(METRIC_SETTINGS.items()):
        make = instantiate(eval_cfg[key], _partial_=True)  # the user's command line, never a file's content
        runtime = {"device": device, "seed": seed + i, **({"workers": workers} if key == "fid" else {})}
        try:
            built[key] = make(**runtime)
        except MissingWeightsError as e:
            print(f"WARNING: {name} is NOT meaningful in this run (a random network stands in): {e}", flush=True)
            built[key] = make(**{**runtime, "random": True})
            built[key].not_meaningful = f"{name}: random network, its weights could not be had (set {setting})"
    return Metrics(**built)


# ------------------------------------------------------------------------------------------------ inputs


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
    x, ok, skipped = read_batch(paths, size, workers, uint8=True)
    if x is None:
        raise ValueError(f"none of the {len(paths)} images could be read (e.g. {skipped[0][1]})")
    names, seen = [], set()
    for p in ok:
        rel = p.relative_to(root) if root else Path(p.name)
        name = rel.with_suffix("").as_posix().replace("/", "__")
        name = name if name not in seen else f"{name}__{p.suffix.lstrip('.')}"
        seen.add(name)
        names.append(name)
    return Source(ok, x, names, skipped)


def latent_baselines(stats: dict, channels: int, where: str) -> dict[str, dict[str, LinearMap]]:
    """Per-direction baseline maps of a checkpoint's ``domain_stats``: every closed-form map it saved (``maps``, plain
    lists rebuilt by :meth:`LinearMap.from_dict`, which checks their shapes), else mean-shift and moment-matching
    from its channel statistics (a checkpoint from before the transport maps)."""
    if "maps" in stats:
        return {d: {k: LinearMap.from_dict(m, channels, f"{where}: domain_stats.maps.{d}.{k}") for k, m in stats["maps"].get(d, {}).items()
                    if k in LATENT_BASELINES} for d in DIRECTIONS}
    a, b = ((torch.as_tensor(stats[f"{x}_mean"], dtype=torch.float32), torch.as_tensor(stats[f"{x}_std"], dtype=torch.float32)) for x in "ab")
    return {"A2B": {k: channel_map(k, a, b) for k in ("mean_shift", "moment_match")},
            "B2A": {k: channel_map(k, b, a) for k in ("mean_shift", "moment_match")}}


# ---------------------------------------------------------------------------------------------- the pipeline


@torch.no_grad()
def encode(vae, images: torch.Tensor, batch: int, amp: bool, desc: str) -> torch.Tensor:
    """Raw latents ``(N, C, h, w)`` float32 of uint8 images, on the VAE's device."""
    device = _device_of(vae)
    out = []
    for chunk in tqdm(images.split(batch), desc=desc, leave=False):
        with autocast(device, amp):
            out.append(vae.encode(from_uint8(chunk.to(device, non_blocking=True))).float())
    return torch.cat(out)


def _device_of(vae) -> torch.device:
    return torch.device(getattr(vae, "device", "cpu"))


def _pinned(x: torch.Tensor) -> torch.Tensor:
    """An async copy of a CUDA tensor into pinned host memory (the caller waits on an event before reading it)."""
    if x.device.type != "cuda":
        return x
    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    return host.copy_(x, non_blocking=True)


Timer = Callable[[str], AbstractContextManager]  # stage name -> a context that times it (lcgan.bench_eval's profile)


def _untimed(stage: str) -> AbstractContextManager:
    return nullcontext()


@torch.no_grad()
def score_outputs(maps: dict[str, Callable], z_raw: torch.Tensor, src_images: torch.Tensor, src_emb: torch.Tensor, vae,
                  convention: Convention, metrics: Metrics, batch: int, amp: bool,
                  save: Callable[[str, int, torch.Tensor], None] | None = None,
                  timer: Timer | None = None, pixel: dict[str, Callable] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Every output kind of one direction (``maps``: kind -> latent map in model space) scored against its sources:
    per-image ``lpips`` and ``clip`` (cosine to the source embedding ``src_emb``) and Inception ``feats``.

    ``save(kind, first_index, uint8 images)`` runs on a worker thread (e.g. writing PNGs). GPU work is queued
    without waiting for the host; scores stay on the device until one copy at the end. With an Inception that
    resizes on the device, the images go to the host only when ``save`` wants them.

    ``timer(stage)``: a context around each stage (a profile that synchronises in it); with one, host work is
    waited for at once instead of overlapping the GPU's, so that each stage's time is its own.
    ``pixel``: kind -> a filter applied to that kind's decoded images (the model's ``train.post_filter``).
    """
    pixel = pixel or {}
    device, space, inception = z_raw.device, vae.space, metrics.fid.inception
    stage = timer or _untimed
    lpips_d, clip_d, feats_d = ({k: [] for k in maps} for _ in range(3))
    pending: deque[tuple[str, Future]] = deque()

    def host_work(kind: str, start: int, x8: torch.Tensor, ready: torch.cuda.Event | None) -> torch.Tensor | None:
        if ready is not None:
            ready.synchronize()  # this worker waits for the copy, not the GPU's queue
        if save is not None:
            with stage("png"):
                save(kind, start, x8)
        if inception.resizes_on_device:
            return None
        with stage("inception_resize"):
            return inception.preprocess(x8)

    def take_features(block: bool) -> None:
        while pending and (block or pending[0][1].done()):
            kind, future = pending.popleft()
            resized = future.result()
            if resized is not None:
                with stage("inception_forward"), autocast(device, amp):
                    feats_d[kind].append(inception.features(resized))

    with ThreadPoolExecutor(1, thread_name_prefix="eval-host") as host:  # one lane: batches leave in order
        for start in tqdm(range(0, len(z_raw), batch), leave=False):
            with stage("upload"):
                z = convention.raw_to_model(z_raw[start : start + batch], space)
                x_src = from_uint8(src_images[start : start + batch].to(device, non_blocking=True))
            for kind, fn in maps.items():
                with autocast(device, amp):
                    with stage("translate"):
                        z_out = convention.model_to_raw(fn(z).float(), space)
                    with stage("decode"):
                        decoded = vae.decode(z_out)
                        if kind in pixel:
                            decoded = pixel[kind](decoded).clamp(-1, 1)
                    with stage("to_uint8"):
                        x8 = to_uint8(decoded)
                        x = from_uint8(x8)
                    with stage("lpips"):
                        lpips_d[kind].append(metrics.lpips(x, x_src))
                    with stage("clip"):
                        clip_d[kind].append((metrics.clip.embed(x).float() * src_emb[start : start + batch]).sum(-1))
                if inception.resizes_on_device:
                    with stage("inception_resize"):
                        resized = inception.preprocess(x8)
                    with stage("inception_forward"), autocast(device, amp):
                        feats_d[kind].append(inception.features(resized))
                    if save is None:
                        continue  # nothing for the host to do: no copy
                with stage("host_copy"):
                    host_copy = _pinned(x8)
                    ready = torch.cuda.Event() if host_copy is not x8 else None
                    if ready is not None:  # on x8's GPU: the current device is GPU 0 whatever eval's device is
                        ready.record(torch.cuda.current_stream(x8.device))
                pending.append((kind, host.submit(host_work, kind, start, host_copy, ready)))
                take_features(block=timer is not None)  # a profile times the host's stages alone
            take_features(block=len(pending) > PIPELINE_DEPTH * len(maps))
        take_features(block=True)
    cpu = lambda parts: torch.cat(parts).float().cpu().numpy()  # noqa: E731  one copy per kind and score
    return {k: {"lpips": cpu(lpips_d[k]), "clip": cpu(clip_d[k]), "feats": cpu(feats_d[k])} for k in maps}


def write_pngs(folder: Path, names: list[str], x8: torch.Tensor, pool: ThreadPoolExecutor) -> None:
    """uint8 ``(B, 3, H, W)`` images as ``folder/<name>.png``, one file per thread of ``pool`` (zlib runs outside the GIL)."""
    def write(name: str, img: torch.Tensor) -> None:
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{name}.png", compress_level=PNG_COMPRESS_LEVEL)

    for _ in pool.map(write, names, x8):  # surfaces a write error here
        pass


# --------------------------------------------------------------------------------------------- a whole run


def prepare(translator: Translator, vae, metrics: Metrics) -> None:
    """Inference layout for the networks: channels-last weights on a GPU (cuDNN's fast NHWC kernels), and cuDNN's
    autotuner, which pays for itself here: every batch but the last has the same shapes."""
    channels_last(translator.g_ab, translator.g_ba, metrics.lpips.model, metrics.clip.model, *vae.networks())
    if next(translator.g_ab.parameters()).device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def run(translator: Translator, vae, metrics: Metrics, sources: dict[str, Source], refs: dict[str, dict | None],
        out_dir: Path, image_size: int, batch_size: int, amp: str, latent_baselines_on: bool, save_images: bool,
        seed: int, fit_baselines_on_inputs: bool, workers: int = 4) -> dict:
    """Translate both domains, score every output kind, write every output; returns the summary.

    ``amp``: ``auto`` (bf16 autocast on CUDA), ``bf16`` or ``none``; ``latent_baselines_on``: score the
    closed-form latent maps too; ``fit_baselines_on_inputs``: without training-domain statistics in the
    checkpoint, fit those maps on the two sources themselves; ``workers``: threads writing PNGs.
    """
    t0 = time.perf_counter()
    device = next(translator.g_ab.parameters()).device
    convention, space, use_amp = translator.convention, vae.space, amp_enabled(amp, device)
    check_channels(translator.channels, space, f"checkpoint {translator.info['path']}")
    side = image_size // space.downsample
    if image_size % space.downsample or side % translator.factor:
        raise ValueError(f"eval.image_size={image_size} gives {side}x{side} latents; it must be a multiple of "
                         f"{space.downsample * translator.factor} for this VAE and generator")
    folder = EvalFolder(out_dir)
    folder.clear()  # an earlier run's outputs never mix with these
    prepare(translator, vae, metrics)
    if device.type == "cuda":  # uploads from pinned memory do not wait for the GPU
        sources = {d: Source(s.paths, s.images.pin_memory(), s.names, s.skipped) for d, s in sources.items()}
    z_raw = {d: encode(vae, s.images, batch_size, use_amp, f"encode {d}").to(device) for d, s in sources.items()}
    with autocast(device, use_amp):
        src_emb = {d: metrics.clip.embed_files(s.paths, s.images, batch_size).float() for d, s in sources.items()}

    stats, fit_on = translator.domain_stats, "checkpoint domain_stats (training domains)"
    use_latent = latent_baselines_on and (stats is not None or (fit_baselines_on_inputs and len(z_raw) == 2))
    if not use_latent:
        maps_by_dir = {"A2B": {}, "B2A": {}}
    elif stats is None:  # no training-domain statistics in the checkpoint: fit on the test folders themselves
        ms = {d: convention.raw_to_model(z, space).cpu() for d, z in z_raw.items()}
        maps_by_dir = fit_all(ms["A"], ms["B"])
        stats = {f"{d.lower()}_{k}": v for d in "AB" for k, v in zip(("mean", "std"), channel_stats(ms[d]))}
        fit_on = "the encoded test folders eval.testA_dir / eval.testB_dir (the checkpoint carries no training-domain stats)"
    else:
        maps_by_dir = latent_baselines(stats, translator.channels, f"checkpoint {translator.info['path']}")
    random_nets = [n for n, net in (("lpips", metrics.lpips), ("clip", metrics.clip), ("inception", metrics.fid)) if net.random]
    approx = "the VAE is the approx linear preview, not a real decoder" if isinstance(vae, ApproxVAE) else None
    # per metric: its network's reason (random / no weights) and the VAE's; the overall list is their union
    metric_reasons = {m: [r for r in (net.not_meaningful, approx) if r] for m, net in metrics.by_name().items()}
    not_meaningful = list(dict.fromkeys(r for reasons in metric_reasons.values() for r in reasons))
    notes = [f"NOT MEANINGFUL: {why}" for why in not_meaningful]
    rows, directions = [], {}
    for direction, (src_d, tgt_d, gen_name) in DIRECTIONS.items():
        if src_d not in sources:
            continue
        src = sources[src_d]
        maps = {"model": getattr(translator, gen_name), "round_trip": lambda z: z,
                **maps_by_dir[direction]}
        written = {"model": folder.gen(direction), "round_trip": folder.round_trip(direction)}
        for f in written.values():
            f.mkdir(parents=True, exist_ok=True)

        def save(kind: str, start: int, x8: torch.Tensor, written=written, src=src) -> None:
            if kind in written:
                write_pngs(written[kind], src.names[start : start + len(x8)], x8, png_pool)

        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="eval-png") as png_pool:
            post = translator.pixel_filter(gen_name)
            res = score_outputs(maps, z_raw[src_d], src.images, src_emb[src_d], vae, convention, metrics, batch_size, use_amp, save,
                                pixel={"model": post} if post is not None else None)
        ref = refs.get(tgt_d)
        scores = {k: {"content_lpips": float(r["lpips"].mean()), "content_clip": float(r["clip"].mean()),
                      **metrics.fid.scores(r["feats"], ref, seed)} for k, r in res.items()}
        mu, sigma = gaussian(res["model"]["feats"])
        buf = io.BytesIO()
        np.savez(buf, mu=mu, sigma=sigma, count=len(res["model"]["feats"]), dim=mu.shape[0])
        ckpt_io.atomic_write_bytes(folder.gen_stats(direction), buf.getvalue())
        fid_m = scores["model"]["fid"]
        directions[direction] = {
            "n_images": len(src.paths),
            "reference": None if ref is None else {"dir": ref["dir"], "count": ref["count"], "stats_dir": ref.get("stats_dir")},
            **scores,
            "beats": {b: (None if fid_m is None or scores[b]["fid"] is None else fid_m < scores[b]["fid"]) for b in scores if b != "model"},
        }
        for i, (p, name) in enumerate(zip(src.paths, src.names)):
            row = {"direction": direction, "src_path": str(p), "gen_path": str(folder.gen(direction) / f"{name}.png"),
                   "content_lpips": res["model"]["lpips"][i], "content_clip": res["model"]["clip"][i]}
            for k in res:
                if k != "model":
                    row[f"{k}_lpips"], row[f"{k}_clip"] = res[k]["lpips"][i], res[k]["clip"][i]
            rows.append({k: (f"{v:.6f}" if isinstance(v, (float, np.floating)) else v) for k, v in row.items()})
        # pictures: source | translation | round trip, an overview of the set and, with save_images, a panel per image
        labels = [f"source {src_d}", f"translation {'G' if gen_name == 'g_ab' else 'F'}({src_d})", "round trip"]
        columns = [folder.gen(direction), folder.round_trip(direction)]
        n = len(src.names)
        idx = torch.linspace(0, n - 1, min(n, OVERVIEW_ROWS)).long().tolist()
        save_comparison(src.images[idx], [src.names[i] for i in idx], columns, labels,
                        [f"{direction}: {len(idx)} of {n} test images", ROUND_TRIP_NOTE, *notes], folder.overview(direction))
        for i, name in enumerate(src.names if save_images else []):
            save_comparison(src.images[i : i + 1], [name], columns, labels, [ROUND_TRIP_NOTE, *notes],
                            folder.panels(direction) / f"{name}.png", table=_score_table(res, scores, i, random_nets))
    write_csv(rows, folder.metrics_csv)
    summary = {
        "complete": True,
        "meaningful": not not_meaningful,
        "not_meaningful_because": not_meaningful,
        "metrics_meaningful": {m: not r for m, r in metric_reasons.items()},  # fid covers KID (the same Inception)
        "metrics_not_meaningful_because": {m: "; ".join(r) or None for m, r in metric_reasons.items()},
        "checkpoint": translator.info,
        "vae": vae.describe(),
        "convention": convention.as_dict(),
        "latent_space": space.as_dict(),
        "image_size": image_size,
        "inference": {"device": str(device), "batch_size": batch_size, "bf16_autocast": use_amp},
        "counts": {d: {"evaluated": len(s.paths), "skipped": len(s.skipped)} for d, s in sources.items()},
        "skipped": [{"domain": d, "path": str(p), "error": e} for d, s in sources.items() for p, e in s.skipped],
        "metric_networks": {"lpips": {"net": metrics.lpips.net, "weights": metrics.lpips.source},
                            "clip": {"model": metrics.clip.name, "pretrained": metrics.clip.tag},
                            "inception": {"weights": metrics.fid.source, "protocol": metrics.fid.inception.protocol}},
        "latent_baselines": {"fit_on": fit_on if use_latent else None,
                             "stats_model_space": {k: [float(x) for x in v] for k, v in stats.items() if k != "maps"} if use_latent else None},
        "beats_means": "model FID against the target folder lower than the baseline's",
        "directions": directions,
        "fid_warning": (f"FID is biased upwards below ~{FID_MIN_IMAGES} images; compare only runs on the same test sets"
                        if min(len(s.paths) for s in sources.values()) < FID_MIN_IMAGES else None),
        "cache": {"clip_source_embeddings_computed": metrics.clip.computed, "clip_source_embeddings_cached": metrics.clip.cached},
        "time_sec": round(time.perf_counter() - t0, 2),
    }
    ckpt_io.atomic_write_bytes(folder.summary, json.dumps(summary, indent=2, default=_json).encode())
    return summary


def _score_table(res: dict, scores: dict, i: int, random_nets: list[str]) -> list[tuple[str, str, str]]:
    """The scores of image ``i`` under its panel: translation and round trip side by side."""
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    rnd = lambda net: " (random net)" if net in random_nets else ""  # noqa: E731
    return [("scores of", "translation", "round trip"),
            (f"LPIPS to source{rnd('lpips')}", fmt(float(res["model"]["lpips"][i])), fmt(float(res["round_trip"]["lpips"][i]))),
            (f"CLIP cos to source{rnd('clip')}", fmt(float(res["model"]["clip"][i])), fmt(float(res["round_trip"]["clip"][i]))),
            (f"FID of the set{rnd('inception')}", fmt(scores["model"]["fid"]), fmt(scores["round_trip"]["fid"]))]


def _json(v):
    return v.tolist() if isinstance(v, np.ndarray) else float(v) if isinstance(v, np.floating) else str(v)


def write_csv(rows: list[dict], path: Path) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    ckpt_io.atomic_write_bytes(path, buf.getvalue().encode())


def print_report(summary: dict) -> None:
    print(f"\nlcgan.evaluate | {summary['checkpoint']['path']} | VAE {summary['vae']['class']} | image_size {summary['image_size']}")
    print(f"{'direction':9} {'output':13} {'lpips':>8} {'clip':>8} {'fid':>10} {'kid':>10}")
    fmt = lambda v, p: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for d, r in summary["directions"].items():
        for k in ("model", *BASELINES):
            if k in r:
                print(f"{d:9} {k:13} {r[k]['content_lpips']:8.4f} {r[k]['content_clip']:8.4f} {fmt(r[k]['fid'], 2):>10} "
                      f"{fmt(r[k]['kid_mean'], 4):>10}")
    yes_no = lambda ok: "yes" if ok else "NO"  # noqa: E731
    print("meaningful: " + ", ".join(f"{m} {yes_no(ok)}" for m, ok in summary["metrics_meaningful"].items()) + " (fid includes kid)")
    for line in summary["not_meaningful_because"]:
        print(f"NOT MEANINGFUL: {line}")
    if summary["fid_warning"]:
        print(f"WARNING: {summary['fid_warning']} (A: {summary['counts'].get('A', {}).get('evaluated')}, "
              f"B: {summary['counts'].get('B', {}).get('evaluated')} images)")
    for s in summary["skipped"]:
        print(f"skipped: {s['error']}")


def load_models(checkpoint: str, vae_cfg: DictConfig | None, device: torch.device, use_ema: bool) -> tuple[Translator, object]:
    """The checkpoint's generators and the VAE (``vae=...`` on the command line, else the checkpoint's); loud when
    that VAE is the approx preview, through which no metric means anything."""
    translator = load_translator(resolve_checkpoint(checkpoint), device, use_ema=use_ema)
    vae, vae_from = build_vae(vae_cfg, translator, device)
    translator.info["vae_from"] = vae_from
    if isinstance(vae, ApproxVAE):
        print("!" * 100 + "\nWARNING: the VAE is `approx`, a linear latent preview (the training default), not a decoder: "
              "metrics through it are NOT meaningful. Pass the VAE the latents came from, e.g. vae=sd15 or "
              "vae=vaelight vae.encoder_path=E vae.decoder_path=D\n" + "!" * 100)
    return translator, vae


def note_random(metrics: Metrics) -> None:
    randoms = [n for n, net in zip(("LPIPS", "CLIP", "Inception"), (metrics.lpips, metrics.clip, metrics.fid)) if net.random]
    if randoms:  # configured (eval.random_weights, eval.*.random) or standing in for missing weights (a WARNING above)
        print(f"NOTE: randomly initialised {', '.join(randoms)}: their scores are NOT meaningful (summary.json: metrics_meaningful)")
