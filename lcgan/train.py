"""Train a latent CycleGAN: ``python -m lcgan.train [group=option ...] [key=value ...]``.

``train(cfg)`` is the whole job and is what tests call; ``main`` is a thin Hydra wrapper.
Outputs go under ``cfg.out_dir`` (Hydra's run directory), laid out by :class:`lcgan.layout.RunFolder`: ``model/``, ``logs/``, ``vis/``.
"""
from __future__ import annotations

import copy
import json
import math
import random
import signal
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from lcgan import CONF_DIR, checkpoint, config, distributed, gain, postfilter, progress, rundir
from lcgan.baselines import channel_stats, fit_all, score_heldout, score_synthetic, validation_key, validation_metric
from lcgan.build import LOSS_KEYS, background_compile, build_gan, build_training, check_sizes, memory_format, probe_view
from lcgan.compile_cache import BackgroundCompile
from lcgan.curves import read_log, write_curves
from lcgan.cyclegan import CycleGANStep, Decoded
from lcgan.data import Domains, UnpairedSampler, place, source_key, spread_picks, steps_per_epoch, training_counts
from lcgan.devices import resolve_device
from lcgan.distributed import ProcessGroup
from lcgan.latents import check_channels
from lcgan.layout import RunFolder
from lcgan.loggers import NullLogger
from lcgan.postfilter import FilterTrainer
from lcgan.preempt import StopRequest
from lcgan.spectrum import domain_spectrum
from lcgan.state import TrainState
from lcgan.translator import load_translator
from lcgan.vae import absolute_paths
from lcgan.vis import save_png, translation_grid

# a loss averaging more than this per step has diverged, finite or not (optim.lr=1e6 gave 1e15):
# healthy losses are O(1), loss_G at most a few times lambda_cyc
DIVERGED = 1e6


def check_finite(window: torch.Tensor, first: int, last: int, epoch: int, last_pt: Path) -> list[float]:
    """Loss sums of a log window -> host (the loop's one sync every log_every steps); a NaN or Inf, or
    a mean loss beyond DIVERGED, stops the run before anything else is saved, so ``last_pt`` stays
    the last good checkpoint."""
    sums = window.tolist()
    n = max(last - first + 1, 1)
    bad = [k for k, v in zip(LOSS_KEYS, sums) if not math.isfinite(v) or abs(v) / n > DIVERGED]
    if bad:
        v = sums[LOSS_KEYS.index(bad[0])]
        what = f"non-finite {bad[0]} ({v})" if not math.isfinite(v) else f"diverging {bad[0]} ({v / n:.3g} per step, > {DIVERGED:g})"
        kept = f"{last_pt} is the last good checkpoint" if last_pt.exists() else "no checkpoint was written yet"
        raise FloatingPointError(
            f"{what} between steps {first} and {last} (epoch {epoch}); "
            f"stopped without saving: {kept}. Lower optim.lr, try train.amp=bf16 or check the data")
    return sums


@dataclass
class Run:
    """One training's parts, built by :func:`build_run` and driven by the loop in :func:`_train`."""

    tc: DictConfig  # cfg.train
    group: ProcessGroup
    folder: RunFolder
    domains: Domains
    vae: Any  # decodes the pictures
    maps: dict  # the closed-form baselines fitted on the training domains: {direction: {name: map}}
    state: TrainState
    step: CycleGANStep
    sampler: UnpairedSampler
    vis_a: torch.Tensor  # the fixed picture batch, one latent per source image
    vis_b: torch.Tensor
    log: checkpoint.JsonlLog
    logger: Any
    compiler: BackgroundCompile | None = None  # train.compile=auto on one GPU: the step compiles meanwhile
    post: FilterTrainer | None = None  # train.post_filter: the pixel post-filters, fitted after every step
    gain_from: dict[str, float] | None = None  # train.gain_from: the gains another run chose, applied at the end
    gain_source: tuple[Path, list[float]] | None = None  # train.gain_transfer (not scale): that run's last.pt, scales


def train(cfg: DictConfig) -> float:
    """Run one training job; returns the validation metric (lower is better) for sweepers.
    Under ``torchrun`` every process runs this; rank 0 alone writes checkpoints, logs and pictures."""
    config.check(cfg)
    group = distributed.setup(resolve_device(cfg.device))
    out = Path(group.broadcast(str(cfg.out_dir)))  # ranks may disagree on ${now:...}
    # one training per folder (a lock, held to the end), and a fresh run never replaces an earlier one's checkpoints
    run_lock = rundir.claim(out, cfg.train.resume, cfg.train.overwrite) if group.main else None
    logger, exit_code = NullLogger(), 1
    try:
        if cfg.train.gain_crossfit:  # the side run first, in this run's folder (whose lock is held meanwhile)
            cfg = crossfit(cfg, RunFolder(out))
        if group.main:  # a partial: the run's config must reach the logger as a plain dict, not be instantiated
            logger = instantiate(cfg.logger, _partial_=True)(run_config=OmegaConf.to_container(cfg, resolve=True), out_dir=str(out))
        value = _train(cfg, logger, group, RunFolder(out))
        group.barrier()  # no rank tears the group down while rank 0 still writes
        exit_code = 0
        return value
    except SystemExit as e:  # preemption: a checkpoint was saved
        exit_code = e.code if isinstance(e.code, int) else 1
        raise
    finally:
        logger.finish(exit_code)
        distributed.teardown()
        if run_lock:
            run_lock.release()


def crossfit(cfg: DictConfig, folder: RunFolder) -> DictConfig:
    """``train.gain_crossfit=f``: the side run (:func:`crossfit_side`) trains first and chooses the gain; this run then
    trains on all the photos and takes its choice (``train.gain_from``). Returns this run's config. With
    train.resume=true both runs resume: a finished side run trains no further and chooses again.
    The cross-fit against the nearest scale and the other protocols: experiments/known_transform/results/gain.md."""
    setting = f"train.gain_crossfit={cfg.train.gain_crossfit}"
    if distributed.world_size() > 1:
        raise config.ConfigError(f"{setting} runs its side run and this run one after the other in one process: train on one "
                                 "GPU, or set train.gain_crossfit=0")
    side, side_folder = crossfit_side(cfg, folder), RunFolder(folder.crossfit_side)
    # a resume resumes the side run too, finished or not: its checkpoint is checked against this recipe (a changed one is
    # refused there, not mixed in) and its gain chosen again at its last epoch; a fresh run refuses an earlier side run
    side.train.resume = bool(cfg.train.resume and side_folder.last.is_file())
    print(f"cross-fit ({setting}): the side run first, on {1 - cfg.train.gain_crossfit:.0%} of the training photos, "
          f"{side.train.epochs} epochs, in {side_folder.root}")
    train(side)
    full = copy.deepcopy(cfg)
    full.train.gain_scales, full.train.gain_from = [], str(side_folder.root)
    full.train.resume = bool(cfg.train.resume and folder.last.is_file())  # a cut side run: this run had not started
    print(f"cross-fit ({setting}): the run on all the training photos, taking the side run's gain (the side run is a part of "
          "this run: continue or lengthen both with this run's command and train.resume=true, not the side run's own)")
    return full


def crossfit_side(cfg: DictConfig, folder: RunFolder) -> DictConfig:
    """The side run of ``train.gain_crossfit=f`` (``folder.crossfit_side``): this recipe and seed with ``data.val_fraction=f``,
    choosing among ``train.gain_scales`` on that fraction, for as many steps as this run (its epochs, checkpoint cadence and
    lr schedule scaled by the two splits' steps per epoch)."""
    tc, data = cfg.train, cfg.data
    setting = f"train.gain_crossfit={tc.gain_crossfit}"
    if not tc.gain_scales or tc.gain_from:
        raise config.ConfigError(f"{setting} chooses the gain among train.gain_scales on a side run: give the scales (e.g. "
                                 "train.gain_scales=[0,0.5,1,1.5,2,3,4,6,8]) and no train.gain_from (or train.gain_crossfit=0)")
    if "val_fraction" not in data or data.val_fraction or data.get("val_a_dir"):
        raise config.ConfigError(f"{setting} holds out a fraction of the training photos in a side run: it needs latent folders "
                                 "(data=latents) with no held-out latents of their own. With data.val_a_dir/val_b_dir (or "
                                 "data.val_fraction) the gain is chosen on those: set train.gain_crossfit=0")
    side = copy.deepcopy(cfg)
    side.out_dir, side.data.val_fraction, side.train.gain_crossfit = str(folder.crossfit_side), tc.gain_crossfit, 0.0
    full_steps, side_steps = (steps_per_epoch(*training_counts(data.a_dir, data.b_dir, data.max_files, f), tc.batch_size)
                              for f in (0.0, tc.gain_crossfit))
    scale = full_steps / max(1, side_steps)
    side.train.epochs = max(1, round(tc.epochs * scale))
    side.train.ckpt_every = max(1, round(tc.ckpt_every * scale))  # beside this run's epoch files (run.py scores both)
    side.train.vis_every = 0
    for key in ("lr_constant_epochs", "lr_decay_epochs"):  # the same schedule, over the side run's epochs
        if cfg.optim.get(key) is not None:
            side.optim[key] = round(cfg.optim[key] * scale)
    if "job_type" in side.logger:
        side.logger.job_type = "crossfit_side"
    return side


def _train(cfg: DictConfig, logger, group: ProcessGroup, folder: RunFolder) -> float:
    tc = cfg.train
    run = build_run(cfg, group, folder, logger)
    state, sampler, last_pt = run.state, run.sampler, folder.last
    if tc.resume:
        resume(run, Path(tc.resume_path) if tc.resume_path else last_pt, cfg)
    if group.main:  # fail now, not after an epoch: the folder must take two checkpoints (weights + Adam's two moments, ~4x)
        checkpoint.remove_stale_tmp(folder.model)  # orphans of saves cut by a SIGKILL, each checkpoint-sized
        checkpoint.check_writable(folder.model, need_bytes=8 * sum(p.numel() * p.element_size() for p in state.gan.parameters()))
    say = print if group.main else (lambda *a, **k: None)
    say(banner(run, tc.epochs))
    steps = sampler.steps_per_epoch
    clock = progress.RunClock(tc.epochs)  # the whole run's ETA, from the epochs this process times
    with StopRequest() as stop, run.compiler or nullcontext():  # a compile still running ends with the run
        for epoch in range(state.epoch, tc.epochs):
            if state.order is None:  # a fresh epoch; a mid-epoch checkpoint brings its order and sums
                state.order, state.sums = sampler.epoch(), torch.zeros(len(LOSS_KEYS), device=group.device)
            state.metrics, start, t0 = None, state.step, time.perf_counter()
            window = LossWindow(state.sums, group, epoch, steps, start, last_pt)
            bar = tqdm(range(start, steps), initial=start, total=steps, ncols=100, desc=f"Epoch {epoch + 1}/{tc.epochs}",
                       leave=False, disable=not group.main,
                       bar_format="{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")
            for i in bar:
                losses = run.step(*sampler.batch(state.order, i, group.device))  # (a, b[, D's targets of a, of b])
                if run.post:
                    run.post(*run.step.fakes)
                state.update_ema(epoch * steps + i)
                window.add(losses)
                due = (i + 1) % tc.log_every == 0 or i + 1 == steps
                if due:  # the loop's one read-back from the device
                    window.report(i, bar, logger, state.opt_g.param_groups[0]["lr"], tc.batch_size)
                    if run.compiler and (note := run.compiler.poll()):
                        bar.write(note)
                # several processes stop together, at a log boundary, when a signal reached any of them
                if bool(stop) if group.world == 1 else due and group.any(bool(stop)):
                    window.check_pending(i)  # never save NaN weights over the last good last.pt
                    state.step, state.sums = i + 1, group.mean_(state.sums)
                    if group.main:
                        checkpoint.save(state.state_dict(), last_pt)
                    bar.close()
                    say(f"stopped at epoch {epoch + 1}, step {i + 1}/{steps}; saved {last_pt}.\n{resume_hint(folder)}")
                    raise SystemExit(128 + (stop.signum or signal.SIGTERM))
            bar.close()
            metrics = end_epoch(run, epoch, time.perf_counter() - t0, steps - start)
            if metrics is not None:
                clock.epoch_done(time.perf_counter() - t0, (steps - start) / steps)  # the whole epoch: steps, validation, saving
                say(progress.summary_line(metrics, tc.epochs, clock.eta(epoch + 1)))
    if group.main and tc.gain_scales:
        calibrate_gains(run, say)
    if group.main and run.gain_from:
        apply_gains_from(run, say)
    if group.main and run.log.path.is_file():
        write_curves(run.log.path, folder.curves)
        say(progress.closing_note(read_log(run.log.path), folder.root, tc.epochs))
    logger.summary({**(state.metrics or {}), "best_val_metric": state.best_val})
    return float((state.metrics or {}).get("val_metric", math.nan))


def build_run(cfg: DictConfig, group: ProcessGroup, folder: RunFolder, logger) -> Run:
    """Data, VAE, networks (started at a fitted baseline), step, state, sampler and picture batch."""
    tc, device = cfg.train, group.device
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    domains = instantiate(cfg.data)
    vae = instantiate(cfg.vae, device=str(device))
    check_channels(domains.channels, vae.space, "data")
    view = Decoded(vae, domains.convention, tc.d_crop) if tc.d_input == "decoded" else None
    gan = build_gan(cfg.model, domains.channels, view, cfg.train).to(device)
    check_sizes(gan, domains.size, probe_view(view, domains.a[:1].to(device)) if view else None)
    if tc.lambda_cyc_decoded > 0:
        gan.decoder = view or Decoded(vae, domains.convention, tc.d_crop)
        probe_view(gan.decoder, domains.a[:1].to(device), "train.lambda_cyc_decoded > 0")
    if tc.lambda_anchor > 0 and getattr(gan.g_ab, "output", None) != "residual":
        raise config.ConfigError("train.lambda_anchor > 0 pulls a residual generator toward its starting map, and a tanh "
                                 "generator has none: set model.generator.output=residual (or train.lambda_anchor=0)")
    if tc.gain_scales and (getattr(gan.g_ab, "output", None) != "residual" or domains.val_a is None):
        raise config.ConfigError("train.gain_scales scales a residual generator's correction, chosen on held-out latents: it "
                                 "needs model.generator.output=residual and held-out latents: data.val_fraction > 0 (e.g. 0.1) or "
                                 "data.val_a_dir and data.val_b_dir; or set train.gain_scales=[]")
    gain_from = gain_source = None
    if tc.gain_from:  # read and checked now, so that a bad file fails before the training, not after it
        if tc.gain_scales or getattr(gan.g_ab, "output", None) != "residual":
            raise config.ConfigError("train.gain_from applies another run's gains to a residual generator's correction: it needs "
                                     "model.generator.output=residual and train.gain_scales=[] (choose here, or take them "
                                     "from there: not both)")
        gain_from = gain.read_choice(tc.gain_from)
        gain_source = gain.read_source(tc.gain_from, tc.gain_transfer) if tc.gain_transfer != "scale" else None
    if tc.lambda_spec > 0:
        if view is None:
            raise config.ConfigError("train.lambda_spec > 0 compares decoded images' spectra: set train.d_input=decoded "
                                     "(or train.lambda_spec=0)")
        # the targets: each domain's spectrum, from up to 1024 latents spread over it (data, never saved)
        gan.spectra = tuple(domain_spectrum(view.centre, z[::max(1, len(z) // 1024)].to(device)) for z in (domains.a, domains.b))
    # the closed-form baselines, fitted once on the training domains (model space, never test data):
    # the anchors below, the validation scores, and what evaluation compares with (saved as data)
    stats_a, stats_b = channel_stats(domains.a), channel_stats(domains.b)
    # grouped by source image: crops and flips of one photo are one sample to the shrunk maps' chance estimate
    groups = [[source_key(f) for f in files] if len(files) == len(z) else None
              for files, z in ((domains.files_a, domains.a), (domains.files_b, domains.b))]
    maps = fit_all(domains.a, domains.b, *groups)
    domain_stats = {"a_mean": stats_a[0].tolist(), "a_std": stats_a[1].tolist(), "b_mean": stats_b[0].tolist(), "b_std": stats_b[1].tolist(),
                    "maps": {direction: {k: m.as_dict() for k, m in by_kind.items()} for direction, by_kind in maps.items()}}
    post, anchors = None, {d: m[gan.g_ab.anchor] for d, m in maps.items()} if gan.g_ab.anchor != "identity" else None
    targets = None  # train.d_targets=unfiltered: what the discriminators take as real (UnpairedSampler)
    if tc.d_targets == "unfiltered" and not (tc.post_filter and tc.post_filter_lr == 0 and view is None):
        raise config.ConfigError("train.d_targets=unfiltered undoes the post-filters fitted at the start: it needs "
                                 "train.post_filter > 0, train.post_filter_lr=0 and train.d_input=latent (or train.d_targets=real)")
    if tc.post_colour != "none" and not tc.post_filter:
        raise config.ConfigError(f"train.post_colour={tc.post_colour} is part of the pixel post-stage: set train.post_filter "
                                 "(e.g. 9), or train.post_colour=none")
    if tc.post_filter:
        if group.world > 1:
            raise config.ConfigError("train.post_filter is single-process for now (each rank would fit its own filters): "
                                     "train on one GPU, or set train.post_filter=0")
        if device.type == "cuda" and getattr(vae, "backend", "torch") != "torch" and group.main:
            print("WARNING: train.post_filter decodes a crop of G(a) and F(b) every step, and this ONNX VAE runs on ONNX Runtime "
                  "on the CPU: set vae.backend=torch to decode on the GPU", file=sys.stderr)
        view_pf = view if view is not None else Decoded(vae, domains.convention, tc.d_crop)
        a_dev, b_dev = domains.a.to(device), domains.b.to(device)
        post, decoupled = postfilter.setup(tc.post_filter, tc.post_filter_lr, view_pf, a_dev, b_dev,
                                           *groups, gan.g_ab.anchor, cfg.seed, tc.post_filter_decouple,
                                           tc.post_colour, tc.post_colour_alpha)
        anchors = decoupled or anchors
        if tc.d_targets == "unfiltered":
            targets = postfilter.unfiltered(a_dev, b_dev, post.filters, view_pf)
        del a_dev, b_dev  # the sampler places the domains itself (on the device when they fit)
        if view is not None:  # d_input=decoded: the discriminators judge the fakes filtered (CycleGAN.post)
            gan.post = (post.filters.g_ab, post.filters.g_ba)
    if anchors:  # start G and F at a baseline fitted on the training domains (decoupled from the filters' part)
        gan.g_ab.set_anchor(anchors["A2B"])
        gan.g_ba.set_anchor(anchors["B2A"])
    group.broadcast_params(gan)
    if group.world > 1:  # same weights everywhere, different batches, flips and replay draws per rank
        torch.manual_seed(cfg.seed + group.rank)
    decodes = view is not None or gan.decoder is not None  # the step runs the VAE's decoder
    background = background_compile(tc.compile, device, group.world, decoded=decodes)
    # a decoding step (d_input, lambda_cyc_decoded): the warm-up child builds no VAE, and that step was never timed compiled:
    # auto stays eager
    eager = background or (decodes and tc.compile == "auto")
    step, sched_g, sched_d = build_training(cfg, gan, device, group, compile=False if eager else None)
    layout = memory_format(tc.channels_last, device)
    sampler = UnpairedSampler(place(group.shard(domains.a).contiguous(memory_format=layout), device),
                              place(group.shard(domains.b).contiguous(memory_format=layout), device), tc.batch_size, domains.flip,
                              targets and tuple(group.shard(t).contiguous(memory_format=layout) for t in targets))
    # a fixed picture batch spread over each domain, one latent per source image (no mirrored flip copies)
    vis_a = domains.a[spread_picks(len(domains.a), domains.files_a, tc.n_vis)].to(device)
    vis_b = domains.b[spread_picks(len(domains.b), domains.files_b, tc.n_vis)].to(device)
    saved_cfg = OmegaConf.to_container(cfg, resolve=True)  # the VAE's paths absolute: the checkpoint is evaluated from anywhere
    if saved_cfg.get("vae"):
        saved_cfg["vae"] = absolute_paths(saved_cfg["vae"])
    record = {"cfg": saved_cfg, "latent_space": vae.space.as_dict(), "convention": domains.convention.as_dict(), "domain_stats": domain_stats}
    state = TrainState(gan, step.opt_g, step.opt_d, sched_g, sched_d, step.scaler, step.buffer_a, step.buffer_b, tc.ema_decay, record, post,
                       tc.ema_debias)
    compiler = BackgroundCompile(step, cfg, (domains.channels, *domains.size), domains.flip, folder.compile_log) if background else None
    return Run(tc, group, folder, domains, vae, maps, state, step, sampler, vis_a, vis_b,
               checkpoint.JsonlLog(folder.log), logger, compiler, post, gain_from, gain_source)


def _loss_sums(sums, path: Path) -> torch.Tensor | None:
    """A mid-epoch checkpoint's loss sums (data, checked), extended with zeros for losses added to ``LOSS_KEYS`` since
    an older lcgan saved it (the tuple only grows at its end), so that run continues where it stopped."""
    if sums is None:
        return None
    if not (isinstance(sums, torch.Tensor) and sums.is_floating_point() and sums.dim() == 1 and len(sums) <= len(LOSS_KEYS)):
        what = f"a {tuple(sums.shape)} {sums.dtype} tensor" if isinstance(sums, torch.Tensor) else type(sums).__name__
        raise ValueError(f"cannot resume from {path}: its mid-epoch loss sums ('sums') are {what}, not a float vector of at most "
                         f"{len(LOSS_KEYS)} numbers; resume from an epoch's end checkpoint (train.resume_path=...) or start a new run")
    return torch.cat([sums, sums.new_zeros(len(LOSS_KEYS) - len(sums))])


def resume(run: Run, path: Path, cfg: DictConfig) -> None:
    """Continue the training saved at ``path``: check that it is this run, restore everything, note the resume."""
    if not path.is_file():
        raise FileNotFoundError(f"train.resume=true but {path} does not exist; set train.resume_path=... "
                                "or hydra.run.dir=<the run's folder> to resume that run")
    state, group = run.state, run.group
    ck = checkpoint.load(path, map_location=group.device)
    networks = {k: v for k, v in state.objects().items() if k in ("G", "F", "D_A", "D_B")}
    rundir.check_resume(ck, path, state.required(), OmegaConf.to_container(cfg, resolve=True), networks,  # what it resumes must be this run
                        run.domains.convention.as_dict(), state.record["domain_stats"], (len(run.sampler.a), len(run.sampler.b)))
    # other ranks keep their own seeds: exact resume is single-process
    state.load_state_dict(ck, restore_rng=cfg.train.resume_restore_rng and group.main)
    if isinstance(state.order, dict):  # a mid-epoch order, loaded onto the GPU; this run may keep a domain pinned on the host
        state.order = {k: v.to(d.device) if isinstance(v := state.order.get(k), torch.Tensor) else v
                       for k, d in (("perm_a", run.sampler.a), ("perm_b", run.sampler.b))}
    state.sums = _loss_sums(state.sums, path)
    if group.main:
        if state.metrics:
            run.log.append(state.metrics)  # the crash may have come between checkpoint and log line
        rundir.record_resume(run.folder.root, path, state.epoch, state.step)
        print(f"resumed from {path}: epoch {state.epoch} done" + (f", step {state.step} of the next" if state.step else ""))


class LossWindow:
    """The losses of the steps since the last read-back, summed on the device beside the epoch's sums
    (no host sync per step). Every ``train.log_every`` steps :meth:`report` reads them back once: the
    NaN / divergence check, the progress bar and the logger."""

    def __init__(self, sums: torch.Tensor, group: ProcessGroup, epoch: int, steps: int, start: int, last_pt: Path) -> None:
        self.sums, self.group, self.epoch, self.steps, self.last_pt = sums, group, epoch, steps, last_pt
        self.window = torch.zeros_like(sums)
        self.start, self.clock = start, time.perf_counter()  # the window's first step, and when it began

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        vec = torch.stack([losses[k].float() for k in LOSS_KEYS])
        self.sums += vec
        self.window += vec

    def check(self, i: int) -> list[float]:
        base = self.epoch * self.steps
        return check_finite(self.window, base + self.start + 1, base + i + 1, self.epoch + 1, self.last_pt)

    def check_pending(self, i: int) -> None:
        """Check the steps not yet reported (before a save outside the log cadence)."""
        if self.start <= i:
            self.check(i)

    def report(self, i: int, bar, logger, lr: float, batch_size: int) -> None:
        self.group.mean_(self.window)
        sums = self.check(i)
        n = i + 1 - self.start
        bar.set_postfix_str(f"G {sums[0] / n:7.3f} D {sums[1] / n:6.3f} cyc {sums[4] / n:6.3f}")
        now = time.perf_counter()  # after the read-back above, so the window's time is real
        pairs_per_sec = progress.rate(n * batch_size, now - self.clock)  # None: too short a window to time
        logger.log_scalars({**{f"step/{k}": v / n for k, v in zip(LOSS_KEYS, sums)}, "step/lr": lr,
                            **({"step/pairs_per_sec": pairs_per_sec} if pairs_per_sec is not None else {}),
                            **step_stats(self.group.device)}, step=self.epoch * self.steps + i + 1)
        self.clock, self.start = now, i + 1
        self.window.zero_()


def end_epoch(run: Run, epoch: int, seconds: float, trained: int) -> dict | None:
    """After an epoch's last step: the schedules step and every rank agrees on the mean losses; then
    rank 0 scores the epoch, keeps the best, saves, logs and draws. Returns its log line (None on other ranks)."""
    state, group, tc, domains = run.state, run.group, run.tc, run.domains
    steps = run.sampler.steps_per_epoch
    lr = state.opt_g.param_groups[0]["lr"]  # the rate this epoch trained with
    state.sched_g.step()
    state.sched_d.step()
    means = dict(zip(LOSS_KEYS, (group.mean_(state.sums) / steps).tolist()))
    in_sync = group.params_in_sync(state.gan)  # every rank takes part, before rank 0 works alone
    state.epoch, state.step, state.order, state.sums = epoch + 1, 0, None, None
    if not group.main:
        return None
    pairs_per_sec = progress.rate(trained * tc.batch_size * group.world, seconds)
    metrics = {"epoch": epoch + 1, "time_sec": round(seconds, 3), **means,
               "lr": lr, "steps": steps,  # 3 significant digits: a slow run's rate never rounds to 0
               **({"pairs_per_sec": float(f"{pairs_per_sec:.3g}")} if pairs_per_sec is not None else {}),
               **({"world_size": group.world, "ddp_in_sync": in_sync} if group.world > 1 else {}),
               **({"loss_pf": run.post.take_mean()} if run.post else {})}
    g_ab, g_ba = state.eval_generators
    if domains.truth is not None:
        metrics.update(score_synthetic(g_ab, g_ba, domains.a, domains.b, domains.truth, maps=run.maps))
    elif domains.val_a is not None:
        metrics.update(score_heldout(g_ab, g_ba, domains.val_a, domains.val_b, domains.a, domains.b, maps=run.maps))
    # the cycle loss picks best.pt only when it is trained: at train.lambda_cyc=0 it is 0 every epoch, and the first would win
    no_metric = validation_key(metrics) == "loss_cyc" and tc.lambda_cyc == 0 and tc.lambda_cyc_decoded == 0
    metrics["val_metric"] = math.nan if no_metric else validation_metric(metrics)
    improved = metrics["val_metric"] < state.best_val
    state.best_val, state.metrics = min(state.best_val, metrics["val_metric"]), metrics
    save_checkpoints(state, run.folder, improved, tc)
    run.log.append(metrics)
    run.logger.log_scalars({f"epoch/{k}": v for k, v in metrics.items()}, step=(epoch + 1) * steps)
    if tc.vis_every and ((epoch + 1) % tc.vis_every == 0 or epoch + 1 == tc.epochs):
        picture = translation_grid(g_ab, g_ba, run.vae, domains.convention, run.vis_a, run.vis_b)
        save_png(picture, run.folder.epoch_picture(epoch + 1))
        run.logger.log_image("vis", picture, step=(epoch + 1) * steps)
        write_curves(run.log.path, run.folder.curves)
    return metrics


def calibrate_gains(run: Run, say) -> None:
    """``train.gain_scales``: choose G's and F's gain for last.pt and best.pt on the held-out latents (lcgan.gain);
    the last epoch's file holds last.pt's generators and gets its gain. Every scale's distance goes to
    ``logs/gain.json`` too, so that another rule can be applied later (experiments/known_transform/gain_rules.py)."""
    table = {"gain_tolerance": run.tc.gain_tolerance, "gain_shrink": run.tc.gain_shrink, "epoch": run.state.epoch}
    for path in (run.folder.last, run.folder.best):
        if path.is_file():
            translator = load_translator(path, run.vae.device, use_gain=False)
            chosen = gain.calibrate(translator, run.vae, run.domains.val_a, run.domains.val_b, list(run.tc.gain_scales),
                                    tolerance=run.tc.gain_tolerance, shrink=run.tc.gain_shrink)
            table[path.name] = chosen
            gain.record(path, {"g_ab": chosen["g_ab"], "g_ba": chosen["g_ba"]})
            say(f"{path.name}: gain G {chosen['g_ab']:g}, F {chosen['g_ba']:g} (held-out pixel-patch SWD by scale: "
                f"G {chosen['dist_g_ab']}, F {chosen['dist_g_ba']})")
            run.logger.summary({f"gain_{path.stem}_g_ab": chosen["g_ab"], f"gain_{path.stem}_g_ba": chosen["g_ba"]})
            if path == run.folder.last and (epoch_pt := run.folder.epoch_checkpoint(run.state.epoch)).is_file():
                gain.record(epoch_pt, {"g_ab": chosen["g_ab"], "g_ba": chosen["g_ba"]})
    checkpoint.atomic_write_bytes(run.folder.gain, json.dumps(table, indent=1).encode())  # a resume's end rewrites it


def apply_gains_from(run: Run, say) -> None:
    """``train.gain_from``: record the gains another run chose (a side run of the same recipe on a split of these
    training folders: the cross-fit of experiments/known_transform/results/gain.md) in last.pt, best.pt and the last
    epoch's file, as :func:`calibrate_gains` records its own; ``logs/gain.json`` says where they came from. With
    ``train.gain_transfer`` other than ``scale``, each file's gain is chosen by comparing its correction with the other
    run's chosen one (:func:`lcgan.gain.transfer`, on the training latents)."""
    table = {"gain_from": str(run.tc.gain_from), "gain_transfer": run.tc.gain_transfer, "epoch": run.state.epoch}
    side = load_translator(run.gain_source[0], run.vae.device, use_gain=False) if run.gain_source else None
    for path in (run.folder.last, run.folder.best):
        if not path.is_file():
            continue
        chosen = dict(run.gain_from)
        if side is not None:
            full = load_translator(path, run.vae.device, use_gain=False)
            chosen = gain.transfer(side, full, run.vae, run.domains.a, run.domains.b, run.gain_from, run.gain_source[1],
                                   run.tc.gain_transfer)
        gains = {"g_ab": chosen["g_ab"], "g_ba": chosen["g_ba"]}
        gain.record(path, gains)
        if path == run.folder.last and (epoch_pt := run.folder.epoch_checkpoint(run.state.epoch)).is_file():
            gain.record(epoch_pt, gains)
        table[path.name] = chosen
        say(f"{path.name}: gain G {gains['g_ab']:g}, F {gains['g_ba']:g} from train.gain_from={run.tc.gain_from}"
            + (f" (its choice G {run.gain_from['g_ab']:g}, F {run.gain_from['g_ba']:g}; "
               f"train.gain_transfer={run.tc.gain_transfer})" if side is not None else ""))
        run.logger.summary({f"gain_{path.stem}_{k}": v for k, v in gains.items()})
    checkpoint.atomic_write_bytes(run.folder.gain, json.dumps(table, indent=1).encode())


def save_checkpoints(state: TrainState, folder: RunFolder, improved: bool, tc: DictConfig) -> None:
    """``last.pt`` every epoch and ``best.pt`` when the validation metric improved: the full state.
    Every ``train.ckpt_every`` epochs (and at the last) ``epoch_XXXX.pt``: the generators alone or the
    full state (``train.epoch_files``), the newest ``train.keep_epochs`` of them kept."""
    full = state.state_dict()
    epoch_pt = folder.epoch_checkpoint(state.epoch)
    periodic = tc.epoch_files != "none" and (state.epoch % tc.ckpt_every == 0 or state.epoch == tc.epochs)
    if periodic and tc.epoch_files == "generators":
        checkpoint.save(state.generators(full), epoch_pt)
    also = [*([epoch_pt] if periodic and tc.epoch_files == "full" else []), *([folder.best] if improved else [])]
    checkpoint.save(full, *also, folder.last)  # last.pt last: a crash before it repeats this epoch, never skips it
    checkpoint.keep_newest(folder.epoch_checkpoints(), tc.keep_epochs)


def banner(run: Run, epochs: int) -> str:
    """The start-up line with the effective sizes."""
    domains, tc, step = run.domains, run.tc, run.step
    n_params = sum(p.numel() for p in run.state.gan.g_ab.parameters())
    return (f"lcgan.train | device {run.group.device} | A {tuple(domains.a.shape)} B {tuple(domains.b.shape)} | "
            f"G/F {n_params / 1e6:.2f}M params each | batch {tc.batch_size} x {run.sampler.steps_per_epoch} steps/epoch x {epochs} epochs | "
            f"amp {step.amp_dtype} | compile {'in the background (eager until ready)' if run.compiler else step.compiled} "
            f"cuda graphs {step.cuda_graphs} | processes {run.group.world} | out {run.folder.root}")


def resume_hint(folder: RunFolder) -> str:
    """How to continue a stopped run: a run started from the command line remembers its overrides."""
    if folder.overrides.is_file():
        return f"Resume with: python -m lcgan.train train.resume=true hydra.run.dir={folder.root}"
    return f"Resume with the same overrides plus: train.resume=true hydra.run.dir={folder.root}"


def step_stats(device: torch.device) -> dict[str, float]:
    """Throughput-side scalars logged every log_every steps."""
    if device.type != "cuda":
        return {}
    return {"gpu_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30}


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    with config.user_errors(*rundir.REFUSALS):  # a bad setting or a refused folder: one line, no traceback
        try:
            if cfg.train.resume:  # the run's own configuration, not the defaults plus this (short) command line
                cfg = rundir.resume_config(Path(cfg.out_dir), rundir.command_overrides()) or cfg
            return train(cfg)
        except rundir.REFUSALS:
            raise  # the folder is another run's, or the resume is not this run: write nothing there
        except Exception:
            # recorded in the job's folder, so a failed job of a sweep is visible next to the others
            error = RunFolder(Path(cfg.out_dir)).error
            error.parent.mkdir(parents=True, exist_ok=True)
            error.write_text(traceback.format_exc())
            raise


if __name__ == "__main__":
    main()
