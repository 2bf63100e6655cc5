"""How far a residual generator goes, set without pairs: ``G(z) = anchor(z) + s net(z)``, with ``s`` chosen
on held-out data by the sliced Wasserstein distance of decoded pixel patches.

On the transform suite the preset's generators learn the right correction and stop short of it where the
latent discriminators stop telling (dark_edges: a fifth of its size), while on the "do no harm" case what
they learn is drift. The held-out distance between G's decoded outputs and the other domain's decoded
latents tells the two apart, per run (experiments/known_transform/results/gain.md): chosen on photos outside
the training folders (the test photos' halves, or another collection's) it pushes dark_edges 4-8x and keeps
``null`` at 0. Chosen on another collection's photos, the nearest scale overshot the colour transforms a little;
the one-standard-error rule (``train.gain_tolerance=1``) did not, but on 11 held-out photos a side it stayed at the
start on dark_edges. Chosen on a split of the training folders (``data.val_fraction``) it loses, because the
training then has fewer photos, so ``train.gain_scales`` is off by default: it needs held-out photos of one's own
(``data.val_a_dir``/``val_b_dir``), or the cross-fit: a side run on 80% of the photos chooses on the rest and the
full run takes its choice (``train.gain_from``, :func:`read_choice`). There the nearest scale overshot sepia (4-8)
and ``train.gain_shrink=0.25`` (the smallest scale that goes 75% of the way) passed every test row measured, so that
is the default rule. The full run then takes that scale only where its own correction agrees with the side run's
(:func:`transfer`, ``train.gain_transfer=agreement``): on sepia the two point apart and the scale made it decay.
``s`` is recorded in the checkpoint as a number (``ck["gain"]``); :func:`lcgan.translator.load_translator`
applies it, so evaluate and translate use it, and the training state, which resumes, is never changed.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from lcgan import checkpoint
from lcgan.baselines import projected_quantiles, projected_w1
from lcgan.layout import RunFolder

SCALES_HINT = "train.gain_scales (e.g. [0, 0.5, 1, 1.5, 2, 3, 4, 6, 8])"


def pixel_patches(images: torch.Tensor, patch: int, max_points: int = 60000, seed: int = 0) -> torch.Tensor:
    """Up to ``max_points`` random ``patch x patch`` patches (stride patch/2) of images ``(N, C, H, W)``, as float64 rows."""
    q = torch.nn.functional.unfold(images.float(), patch, stride=max(1, patch // 2)).transpose(1, 2).reshape(-1, images.shape[1] * patch**2)
    return q[torch.randperm(len(q), generator=torch.Generator().manual_seed(seed))[:max_points].to(q.device)].double()


def directions(a: torch.Tensor, n_proj: int = 128, seed: int = 0) -> torch.Tensor:
    """``n_proj`` random directions for point set ``a`` (its width, dtype and device), drawn the same for every set."""
    return torch.randn(a.shape[1], n_proj, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(a.device).to(a.dtype)


def sliced_w1(a: torch.Tensor, b: torch.Tensor, n_proj: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between two point sets (rows): ``n_proj`` random unit directions, 256 quantiles."""
    return projected_w1(a, b, directions(a, n_proj, seed))


def patch_quantiles(x: torch.Tensor, patch: int = 4) -> torch.Tensor:
    """One image set's side of :func:`patch_swd`: the quantiles of its :func:`pixel_patches` along fixed directions."""
    pts = pixel_patches(x, patch)
    return projected_quantiles(pts, directions(pts))


def quantile_w1(q: torch.Tensor, r: torch.Tensor) -> float:
    """The sliced Wasserstein-1 distance from two sets' :func:`patch_quantiles`."""
    return (q - r).abs().mean().item()


def patch_swd(x: torch.Tensor, y: torch.Tensor, patch: int = 4) -> float:
    """The distance the gain is chosen by: :func:`sliced_w1` of two image sets' :func:`pixel_patches`. Fixed seeds,
    so every scale is compared on the same draws."""
    return quantile_w1(patch_quantiles(x, patch), patch_quantiles(y, patch))


def correction_layer(generator: torch.nn.Module, where: str) -> torch.nn.Conv2d:
    """The last conv of a residual generator's correction: scaling it by ``s`` gives ``anchor(z) + s net(z)``."""
    last = generator.net[-1] if hasattr(generator, "net") else None
    if getattr(generator, "output", None) != "residual" or not isinstance(last, torch.nn.Conv2d):
        raise ValueError(f"{where}: a gain needs a residual generator (model.generator.output=residual); this one is not")
    return last


@contextlib.contextmanager
def scaled(generator: torch.nn.Module, s: float, where: str = "generator"):
    """``generator`` with its correction scaled by ``s`` inside the block, restored after."""
    last = correction_layer(generator, where)
    weight, bias = last.weight.detach().clone(), last.bias.detach().clone() if last.bias is not None else None
    try:
        with torch.no_grad():
            apply(generator, s, where)
        yield generator
    finally:
        with torch.no_grad():
            last.weight.copy_(weight)
            if bias is not None:
                last.bias.copy_(bias)


@torch.no_grad()
def apply(generator: torch.nn.Module, s: float, where: str = "generator") -> None:
    """Scale the correction by ``s`` in place (a loaded checkpoint's recorded gain)."""
    last = correction_layer(generator, where)
    last.weight.mul_(s)
    if last.bias is not None:
        last.bias.mul_(s)


def check(gain, where: str, fix: str = "delete the entry (the trained generators then load as trained) or re-save the "
                                       "checkpoint from a trusted run") -> dict[str, float]:
    """A checkpoint's ``gain`` entry (data read from a file): ``{"g_ab": s, "g_ba": s}``, finite numbers in [0, 100]."""
    ok = isinstance(gain, dict) and set(gain) == {"g_ab", "g_ba"} and all(  # NaN and inf fail the range too
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100 for v in gain.values())
    if not ok:
        raise ValueError(f"{where}: gain must be {{'g_ab': s, 'g_ba': s}} with finite numbers in [0, 100]; got {str(gain)[:120]}; "
                         f"{fix}")
    return {k: float(v) for k, v in gain.items()}


def resamples(n: int, m: int, count: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` bootstrap draws of image indices (with replacement) of two sets of ``n`` and ``m`` images; fixed seed,
    so every scale is resampled alike and the differences between scales are paired."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(n, (n,), generator=g), torch.randint(m, (m,), generator=g)) for _ in range(count)]


@torch.no_grad()
def choose(generator: torch.nn.Module, render, z: torch.Tensor, reference: torch.Tensor, scales: list[float],
           where: str = "generator", tolerance: float = 0.0, draws: int = 16, shrink: float = 0.0) -> tuple[float, dict[float, float]]:
    """The scale of ``scales`` whose outputs ``render(G_s(z))`` (images) are nearest ``reference`` (the other domain's
    held-out images) by :func:`patch_swd`; ties go to the smaller scale. Returns it and every scale's distance.

    ``tolerance`` > 0: the smallest scale whose distance is within ``tolerance`` standard errors of the nearest one
    (the one-standard-error rule at 1), the error of each difference estimated from ``draws`` bootstrap resamples of
    the held-out images. A smaller scale stays nearer the start: a move from it needs evidence beyond the noise of the
    held-out photos. Resampling a dozen photos makes that noise wide (duplicates change what the photos show), so
    with few photos it stays at the start where the truth is far from it (results/gain.md).

    ``shrink`` > 0: the smallest scale whose distance is within ``shrink`` of the way from the nearest one's back to
    the start's (the smallest scale's), e.g. 0.25: a scale that goes at least 75% of the way. Where both are set, a
    smaller scale may exceed the nearest one's distance by the larger of the two margins."""
    if not scales:
        raise ValueError(f"no scales to choose from: set {SCALES_HINT}")
    boot = [(i.to(reference.device), j.to(reference.device)) for i, j in resamples(len(z), len(reference), draws)] if tolerance > 0 else []
    ref, ref_boot = patch_quantiles(reference), [patch_quantiles(reference[j]) for _, j in boot]  # the same for every scale
    dist, spread = {}, {}
    for s in sorted(float(v) for v in scales):
        with scaled(generator, s, where):
            x = render(generator(z))
        dist[s] = quantile_w1(patch_quantiles(x), ref)
        spread[s] = torch.tensor([quantile_w1(patch_quantiles(x[i]), r) for (i, _), r in zip(boot, ref_boot)], dtype=torch.float64)
    best = min(dist, key=lambda s: (dist[s], s))
    noise = {s: tolerance * (spread[s] - spread[best]).std().item() for s in dist} if boot else None
    return pick(dist, shrink, noise), dist


def pick(dist: dict[float, float], shrink: float = 0.0, noise: dict[float, float] | None = None) -> float:
    """The rule, from every scale's distance: the smallest scale whose distance exceeds the nearest one's by at most
    the larger of ``shrink`` of the way back to the start's (the smallest scale listed) and ``noise[s]`` (its
    standard errors). Both 0: the nearest scale, ties to the smaller."""
    best = min(dist, key=lambda s: (dist[s], s))
    back = max(0.0, shrink * (dist[min(dist)] - dist[best]))
    return min(s for s in dist if s == best or dist[s] - dist[best] <= max(back, (noise or {}).get(s, 0.0)))


def render(t, vae, z: torch.Tensor, name: str | None) -> torch.Tensor:
    """Images of a loaded translator ``t``'s model-convention latents ``z``: decoded by ``vae`` 32 at a time, through the
    post-stage of direction ``name`` (None: none), clamped to [-1, 1]: what evaluate scores."""
    h = t.pixel_filter(name) if name else None
    out = []
    for c in z.split(32):
        x = vae.decode(t.convention.model_to_raw(c, vae.space)).to(vae.device)
        out.append((h(x) if h is not None else x).clamp(-1, 1))
    return torch.cat(out)


def calibrate(t, vae, val_a: torch.Tensor, val_b: torch.Tensor, scales: list[float], max_images: int = 128,
              tolerance: float = 0.0, shrink: float = 0.0) -> dict:
    """Choose the gains of a loaded translator ``t`` (:func:`lcgan.translator.load_translator` with ``use_gain=False``)
    on held-out latents ``val_a``/``val_b`` (its model convention), decoded by ``vae`` with its post-stage.
    Returns ``{"g_ab": s, "g_ba": s, "dist_g_ab": {...}, "dist_g_ba": {...}}``; :func:`record` writes the gains."""
    va, vb = val_a[:max_images].to(vae.device), val_b[:max_images].to(vae.device)
    result = {}
    for name, gen, source, target in (("g_ab", t.g_ab, va, vb), ("g_ba", t.g_ba, vb, va)):
        s, dist = choose(gen, lambda z, n=name: render(t, vae, z, n), source, render(t, vae, target, None), scales,
                         f"{t.info['path']}: {name}", tolerance, shrink=shrink)
        result[name], result[f"dist_{name}"] = s, {f"{k:g}": round(v, 6) for k, v in dist.items()}
    return result


def evenly(z: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` of ``z``'s rows, evenly spaced (all of them if fewer): over a folder sorted by name, every part of it."""
    return z[torch.linspace(0, len(z) - 1, min(n, len(z))).round().long()]


@torch.no_grad()
def scaled_render(t, vae, raw: torch.Tensor, name: str, s: float) -> torch.Tensor:
    """:func:`render` of translator ``t``'s direction ``name`` (``g_ab``/``g_ba``) on raw latents, its correction scaled by ``s``."""
    gen = getattr(t, name)
    with scaled(gen, s, f"{t.info['path']}: {name}"):
        return render(t, vae, gen(t.convention.raw_to_model(raw, vae.space)), name)


@torch.no_grad()
def transfer(side, full, vae, z_a: torch.Tensor, z_b: torch.Tensor, gains: dict[str, float], scales: list[float],
             rule: str = "correction", max_images: int = 128) -> dict:
    """``train.gain_transfer``: the cross-fit's full run takes the correction its side run chose, not its scale.

    For each direction, ``side``'s chosen gain ``g`` gives its correction ``out_side(z; g) - out_side(z; 0)`` (outputs as
    :func:`render` gives them, each run against its own start); ``full`` takes the scale of ``scales`` whose correction
    ``out_full(z; s) - out_full(z; 0)`` is nearest it (mean squared pixel difference; ties to the smaller). Two runs of
    one recipe on overlapping photos share the transform more than what each learned by chance: where their corrections
    agree the full run keeps about ``g``, where they point apart it stays near its start. On sepia the side and full
    runs' corrections point opposite ways (cosine -0.24 to -0.85, 9 seeds) and the side's scale cost up to 0.7 dB;
    on dark_edges they agree (0.6-0.97) but the nearest scale (1.5-3) falls short of the side's (2-6) and of where the
    full run's PSNR peaks (3-8) (experiments/known_transform/results/gain.md). So ``rule="agreement"`` takes the
    side's scale ``g`` where the nearest scale is above 0 (the runs' corrections agree) and 0 where it is 0;
    ``rule="correction"`` takes the nearest scale itself. ``z_a``/``z_b``: training latents of each domain in
    ``full``'s model convention (``max_images`` of each, evenly spaced; the side run reads them in its own convention).
    Both translators loaded with ``use_gain=False``. Returns ``{"g_ab": s, "g_ba": s, "side_g_ab": g, "nearest_g_ab": s,
    "err_g_ab": {scale: error}, ...}``."""
    result = {}
    for name, z_model in (("g_ab", z_a), ("g_ba", z_b)):
        g = float(gains[name])
        result[f"side_{name}"] = g
        if g == 0:  # no correction to take: the start is nearest (error 0)
            result[name] = result[f"nearest_{name}"] = 0.0
            result[f"err_{name}"] = {}
            continue
        z = full.convention.model_to_raw(evenly(z_model, max_images).to(vae.device), vae.space)
        start = scaled_render(full, vae, z, name, 0.0)
        wanted = scaled_render(side, vae, z, name, g) - scaled_render(side, vae, z, name, 0.0)
        err = {0.0: wanted.pow(2).mean().item()}  # the start's own correction is 0
        err.update({s: (scaled_render(full, vae, z, name, s) - start - wanted).pow(2).mean().item()
                    for s in sorted({float(v) for v in scales} - {0.0})})
        nearest = result[f"nearest_{name}"] = min(err, key=lambda s: (err[s], s))
        result[name] = nearest if rule == "correction" else (g if nearest > 0 else 0.0)
        result[f"err_{name}"] = {f"{k:g}": round(v, 8) for k, v in err.items()}
    return result


def record(path, gains: dict[str, float]) -> None:
    """Write ``gains`` into the checkpoint at ``path`` (atomically; the weights untouched)."""
    ck = checkpoint.load(path)
    ck["gain"] = check(gains, f"gain for {path}")
    checkpoint.save(ck, path)


def _last_entry(path: str, setting: str) -> tuple[Path, dict]:
    """Another run's ``logs/gain.json`` (``path``: that file or the run's folder) and its ``last.pt`` entry. The file is data:
    parsed as JSON; what is taken from it is checked by the callers."""
    file = RunFolder(Path(path)).gain if Path(path).is_dir() else Path(path)
    try:
        table = json.loads(file.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{setting}={path}: cannot read {file} ({str(e)[:200]}); give a run folder trained with "
                         f"{SCALES_HINT}, or its logs/gain.json") from None
    last = table.get("last.pt") if isinstance(table, dict) else None
    if not isinstance(last, dict):
        raise ValueError(f"{setting}={path}: {file} has no 'last.pt' entry with the gains (g_ab, g_ba); point {setting} at a "
                         f"run trained with {SCALES_HINT}, or at its logs/gain.json")
    return file, last


def read_choice(path: str, setting: str = "train.gain_from") -> dict[str, float]:
    """The gains another run chose for its last.pt, from its ``logs/gain.json`` (``path``: that file or the run's
    folder). Only two checked numbers are taken from the file."""
    file, last = _last_entry(path, setting)
    return check({k: last.get(k) for k in ("g_ab", "g_ba")}, f"{setting}: {file}: last.pt",
                 f"point {setting} at a run trained with {SCALES_HINT}, or at its logs/gain.json")


def read_source(path: str, rule: str, setting: str = "train.gain_from") -> tuple[Path, list[float]]:
    """For :func:`transfer`: another run's ``last.pt`` and the scales it chose among (its ``logs/gain.json``'s distances
    by scale, checked numbers in [0, 100])."""
    file, last = _last_entry(path, setting)
    dist = last.get("dist_g_ab")
    try:
        scales = sorted(float(k) for k in dist) if isinstance(dist, dict) and dist else None
    except ValueError:
        scales = None
    if not scales or not all(0 <= s <= 100 for s in scales):  # NaN and inf fail the range too
        raise ValueError(f"{setting}: {file}: last.pt has no distances by scale (dist_g_ab) to take the scales from; point "
                         f"{setting} at a run that chose its gain itself ({SCALES_HINT})")
    model = RunFolder(file.parent.parent).last
    if not model.is_file():
        raise ValueError(f"{setting}={path}: train.gain_transfer={rule} reads that run's generators, and {model} is "
                         "missing: point it at the run's folder as it was written, or set train.gain_transfer=scale")
    return model, scales
