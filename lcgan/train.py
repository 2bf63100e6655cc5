"""Train a latent CycleGAN: ``python -m lcgan.train [group=option ...] [key=value ...]``.

``train(cfg)`` is the whole job and is what tests call; ``main`` is a thin Hydra wrapper.
Outputs go under ``cfg.out_dir`` (Hydra's run directory): ``model/``, ``logs/``, ``vis/``.
"""
from __future__ import annotations

import copy
import math
import random
import signal
import time
import traceback
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from lcgan import CONF_DIR, checkpoint, config, distributed, progress, rundir
from lcgan.baselines import BASELINES, channel_stats, fit_all, score_heldout, score_synthetic, validation_metric
from lcgan.buffer import FakeBuffer
from lcgan.curves import read_log, write_curves
from lcgan.cyclegan import CycleGAN, CycleGANStep, LossWeights
from lcgan.data import UnpairedSampler, place, source_key, spread_picks
from lcgan.latents import check_channels
from lcgan.loggers import NullLogger
from lcgan.preempt import StopRequest
from lcgan.vae import absolute_paths
from lcgan.vis import grid, save_png

LOSS_KEYS = ("loss_G", "loss_D", "loss_gan_G", "loss_gan_F", "loss_cyc", "loss_id", "loss_D_A", "loss_D_B", "loss_swd")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available here; use device=auto or device=cpu")
    return torch.device(name)


def build_nets(model_cfg: DictConfig, channels: int) -> CycleGAN:
    """Two generators and two discriminators from the ``model`` group; channels come from the data."""
    gen = lambda: instantiate(model_cfg.generator, in_channels=channels)  # noqa: E731
    disc = lambda: instantiate(model_cfg.discriminator, in_channels=channels)  # noqa: E731
    return CycleGAN(g_ab=gen(), g_ba=gen(), d_a=disc(), d_b=disc())


def check_sizes(nets: CycleGAN, size: tuple[int, int]) -> None:
    h, w = size
    if h % nets.g_ab.factor or w % nets.g_ab.factor:
        raise ValueError(f"latents of {h}x{w} are not divisible by {nets.g_ab.factor}; lower model.generator.n_downsampling")
    smallest = max(4, 2 * nets.g_ab.factor)  # reflection pads: 3 at full size, 1 at the bottleneck
    if min(h, w) < smallest:  # was torch's padding error
        raise ValueError(f"latents of {h}x{w} are too small for the generator (min {smallest}); encode larger images")
    if min(h, w) < nets.d_a.min_size:
        raise ValueError(f"latents of {h}x{w} are too small for the discriminator (min {nets.d_a.min_size}); lower model.discriminator.n_layers or .kernel")


# a loss averaging more than this per step has diverged, finite or not (optim.lr=1e6 gave 1e15):
# healthy losses are O(1), loss_G at most a few times lambda_cyc
DIVERGED = 1e6


def check_finite(window: torch.Tensor, first: int, last: int, epoch: int, last_pt: Path) -> list[float]:
    """Loss sums of a log window -> host (the loop's one sync every log_every steps); a NaN or Inf, or
    a mean loss beyond DIVERGED, stops the run before anything else is saved, so ``last_pt`` stays
    the last good checkpoint."""
    w = window.tolist()
    n = max(last - first + 1, 1)
    bad = [k for k, v in zip(LOSS_KEYS, w) if not math.isfinite(v) or abs(v) / n > DIVERGED]
    if bad:
        v = w[LOSS_KEYS.index(bad[0])]
        what = f"non-finite {bad[0]} ({v})" if not math.isfinite(v) else f"diverging {bad[0]} ({v / n:.3g} per step, > {DIVERGED:g})"
        kept = f"{last_pt} is the last good checkpoint" if last_pt.exists() else "no checkpoint was written yet"
        raise FloatingPointError(
            f"{what} between steps {first} and {last} (epoch {epoch}); "
            f"stopped without saving: {kept}. Lower optim.lr, try train.amp=bf16 or check the data")
    return w


def auto_switch(value, device: torch.device) -> bool:
    """Speed switches: ``auto`` means on for CUDA, off elsewhere."""
    return device.type == "cuda" if value == "auto" else bool(value)


def build_training(cfg: DictConfig, nets: CycleGAN, device: torch.device, world: int = 1) -> dict:
    """Optimizers, schedulers, AMP scaler, replay buffers and the step function: what
    ``lcgan.train`` and ``lcgan.bench`` share, so the benchmark times the real step."""
    tc = cfg.train
    # cuDNN tries its algorithms once per shape and keeps the fastest: shapes are fixed here.
    # (A process-wide flag: set from every built step, so the bench's plain step sets it off.)
    torch.backends.cudnn.benchmark = auto_switch(tc.cudnn_benchmark, device)
    if auto_switch(tc.channels_last, device):
        nets.to(memory_format=torch.channels_last)  # cuDNN's fast convolution layout
    make_opt = instantiate(cfg.optim, epochs=tc.epochs)  # the schedule follows the run's length
    opt_g, sched_g = make_opt(list(nets.g_ab.parameters()) + list(nets.g_ba.parameters()))
    opt_d, sched_d = make_opt(list(nets.d_a.parameters()) + list(nets.d_b.parameters()))
    amp_dtype = AMP_DTYPES[tc.amp] if device.type == "cuda" else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    weights = LossWeights(lambda_cyc=tc.lambda_cyc, lambda_id=tc.lambda_id, d_loss_scale=tc.d_loss_scale,
                          lambda_swd=tc.lambda_swd, swd_kernel=tc.swd_kernel)
    step = CycleGANStep(nets, opt_g, opt_d, weights, FakeBuffer(tc.fake_buffer_size), FakeBuffer(tc.fake_buffer_size),
                        amp_dtype, scaler, compile=auto_switch(tc.compile, device), cuda_graphs=auto_switch(tc.cuda_graphs, device),
                        fuse_passes=tc.fuse_passes,
                        grad_sync=(lambda params: distributed.average_grads(params, world)) if world > 1 else None,
                        r1_gamma=tc.r1_gamma, r1_every=tc.r1_every)
    return {"step": step, "opt_g": opt_g, "opt_d": opt_d, "sched_g": sched_g, "sched_d": sched_d, "scaler": scaler, "amp_dtype": amp_dtype}


def train(cfg: DictConfig) -> float:
    """Run one training job; returns the validation metric (lower is better) for sweepers.
    Under ``torchrun`` every process runs this; rank 0 alone writes checkpoints, logs and pictures."""
    config.check(cfg)
    d = distributed.setup(resolve_device(cfg.device))
    out = Path(distributed.broadcast(str(cfg.out_dir), d))  # ranks may disagree on ${now:...}
    # one training per folder (a lock, held to the end), and a fresh run never replaces an earlier one's checkpoints
    run_lock = rundir.claim(out, cfg.train.resume, cfg.train.overwrite) if d.main else None
    logger, exit_code = NullLogger(), 1
    try:
        if d.main:  # a partial: the run's config must reach the logger as a plain dict, not be instantiated
            logger = instantiate(cfg.logger, _partial_=True)(run_config=OmegaConf.to_container(cfg, resolve=True), out_dir=str(out))
        value = _train(cfg, logger, d, out)
        distributed.barrier(d)  # no rank tears the group down while rank 0 still writes
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


def _train(cfg: DictConfig, logger, d: distributed.Dist, out: Path) -> float:
    tc = cfg.train
    device = d.device
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    domains = instantiate(cfg.data)
    vae = instantiate(cfg.vae, device=str(device))  # decodes the pictures
    check_channels(domains.channels, vae.space, "data")
    nets = build_nets(cfg.model, domains.channels).to(device)
    check_sizes(nets, domains.size)
    # the closed-form baselines, fitted once on the training domains (model space, never test data):
    # the anchors below, the validation scores, and what evaluation compares with (saved as data)
    stats_a, stats_b = channel_stats(domains.a), channel_stats(domains.b)
    # grouped by source image: crops and flips of one photo are one sample to the shrunk maps' chance estimate
    groups = [[source_key(f) for f in files] if len(files) == len(z) else None for files, z in ((domains.files_a, domains.a), (domains.files_b, domains.b))]
    maps = fit_all(domains.a, domains.b, *groups)
    domain_stats = {"a_mean": stats_a[0].tolist(), "a_std": stats_a[1].tolist(), "b_mean": stats_b[0].tolist(), "b_std": stats_b[1].tolist(),
                    "maps": {direction: {k: m.as_dict() for k, m in by_kind.items()} for direction, by_kind in maps.items()}}
    if nets.g_ab.anchor != "identity":  # start G and F at a baseline fitted on the training domains
        nets.g_ab.set_anchor(maps["A2B"][nets.g_ab.anchor])
        nets.g_ba.set_anchor(maps["B2A"][nets.g_ba.anchor])
    distributed.broadcast_params(nets, d)
    if d.world > 1:  # same weights everywhere, different batches, flips and replay draws per rank
        torch.manual_seed(cfg.seed + d.rank)
    parts = build_training(cfg, nets, device, d.world)
    step_fn, opt_g, opt_d, sched_g, sched_d, scaler = (parts[k] for k in ("step", "opt_g", "opt_d", "sched_g", "sched_d", "scaler"))
    buffer_a, buffer_b = step_fn.buffer_a, step_fn.buffer_b
    layout = torch.channels_last if auto_switch(tc.channels_last, device) else torch.contiguous_format
    sampler = UnpairedSampler(place(distributed.shard(domains.a, d).contiguous(memory_format=layout), device),
                              place(distributed.shard(domains.b, d).contiguous(memory_format=layout), device), tc.batch_size, domains.flip)
    # a fixed picture batch spread over each domain, one latent per source image (no mirrored flip copies)
    vis_a = domains.a[spread_picks(len(domains.a), domains.files_a, tc.n_vis)].to(device)
    vis_b = domains.b[spread_picks(len(domains.b), domains.files_b, tc.n_vis)].to(device)

    # EMA of the generators' weights: what pictures, validation and evaluation use when on
    ema = [Ema(net, tc.ema_decay) for net in (nets.g_ab, nets.g_ba)] if tc.ema_decay > 0 else None
    eval_g_ab, eval_g_ba = (ema[0].module, ema[1].module) if ema else (nets.g_ab, nets.g_ba)

    saved_cfg = OmegaConf.to_container(cfg, resolve=True)  # the VAE's paths absolute: the checkpoint is evaluated from anywhere
    if saved_cfg.get("vae"):
        saved_cfg["vae"] = absolute_paths(saved_cfg["vae"])

    def state(epoch: int, step: int, order, sums, metrics) -> dict:
        return {
            "G": nets.g_ab.state_dict(), "F": nets.g_ba.state_dict(), "D_A": nets.d_a.state_dict(), "D_B": nets.d_b.state_dict(),
            "opt_G": opt_g.state_dict(), "opt_D": opt_d.state_dict(), "sched_G": sched_g.state_dict(), "sched_D": sched_d.state_dict(),
            "scaler": scaler.state_dict(), "buffer_A": buffer_a.state_dict(), "buffer_B": buffer_b.state_dict(),
            "cfg": saved_cfg, "epoch": epoch, "step": step, "order": order, "sums": sums,
            "rng": checkpoint.rng_state(), "metrics": metrics, "best_val": best_val,
            **({"G_ema": ema[0].module.state_dict(), "F_ema": ema[1].module.state_dict()} if ema else {}),
            "latent_space": vae.space.as_dict(), "convention": domains.convention.as_dict(), "domain_stats": domain_stats,
        }

    log = checkpoint.JsonlLog(out / "logs" / "train_log.jsonl")
    start_epoch, start_step, order, sums, best_val = 0, 0, None, None, math.inf
    if tc.resume:
        path = Path(tc.resume_path) if tc.resume_path else out / "model" / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"train.resume=true but {path} does not exist; set train.resume_path=... "
                                    "or hydra.run.dir=<the run's folder> to resume that run")
        ck = checkpoint.load(path, map_location=device)
        rundir.check_resume(ck, path, OmegaConf.to_container(cfg, resolve=True),  # what it resumes must be this run
                            {"G": nets.g_ab, "F": nets.g_ba, "D_A": nets.d_a, "D_B": nets.d_b},
                            domains.convention.as_dict(), domain_stats, (len(sampler.a), len(sampler.b)))
        for module, key in ((nets.g_ab, "G"), (nets.g_ba, "F"), (nets.d_a, "D_A"), (nets.d_b, "D_B")):
            module.load_state_dict(ck[key])
        for obj, key in ((opt_g, "opt_G"), (opt_d, "opt_D"), (sched_g, "sched_G"), (sched_d, "sched_D"),
                         (scaler, "scaler"), (buffer_a, "buffer_A"), (buffer_b, "buffer_B")):
            obj.load_state_dict(ck[key])
        start_epoch, start_step, order, sums = ck["epoch"], ck["step"], ck["order"], ck["sums"]
        best_val = ck.get("best_val", math.inf)
        if ema:
            for avg, key in ((ema[0], "G_ema"), (ema[1], "F_ema")):
                avg.module.load_state_dict(ck[key])
        if ck.get("metrics") and d.main:
            log.append(ck["metrics"])  # the crash may have come between checkpoint and log line
        if tc.resume_restore_rng and d.main:  # other ranks keep their own seeds: exact resume is single-process
            checkpoint.set_rng_state(ck["rng"])
        if d.main:
            print(f"resumed from {path}: epoch {start_epoch} done" + (f", step {start_step} of the next" if start_step else ""))

    # fail now, not after an epoch: the folder must take two checkpoints (weights + Adam's two moments, ~4x)
    if d.main:
        checkpoint.remove_stale_tmp(out / "model")  # orphans of saves cut by a SIGKILL, each checkpoint-sized
        checkpoint.check_writable(out / "model", need_bytes=8 * sum(p.numel() * p.element_size() for p in nets.parameters()))
    steps = sampler.steps_per_epoch
    n_params = sum(p.numel() for p in nets.g_ab.parameters())
    say = print if d.main else (lambda *a, **k: None)
    say(f"lcgan.train | device {device} | A {tuple(domains.a.shape)} B {tuple(domains.b.shape)} | "
          f"G/F {n_params / 1e6:.2f}M params each | batch {tc.batch_size} x {steps} steps/epoch x {tc.epochs} epochs | "
          f"amp {parts['amp_dtype']} | compile {step_fn.compiled} "
          f"cuda graphs {step_fn.cuda_graphs} | processes {d.world} | out {out}")
    metrics: dict = {}
    clock = progress.RunClock(tc.epochs)  # the whole run's ETA, from the epochs this process times
    curves_png = out / "logs" / "curves.png"
    with StopRequest() as stop:
        for epoch in range(start_epoch, tc.epochs):
            if order is None:
                order = sampler.epoch()
            if sums is None:
                sums = torch.zeros(len(LOSS_KEYS), device=device)
            window, window_start = torch.zeros(len(LOSS_KEYS), device=device), start_step
            t0 = t_window = time.perf_counter()
            bar = tqdm(range(start_step, steps), initial=start_step, total=steps, ncols=100,
                       desc=f"Epoch {epoch + 1}/{tc.epochs}", leave=False, disable=not d.main,
                       bar_format="{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")
            for i in bar:
                real_a, real_b = sampler.batch(order, i, device)
                losses = step_fn(real_a, real_b)
                if ema:
                    ema[0].update(nets.g_ab)
                    ema[1].update(nets.g_ba)
                vec = torch.stack([losses[k].float() for k in LOSS_KEYS])
                sums += vec
                window += vec
                at_boundary = (i + 1) % tc.log_every == 0 or i + 1 == steps
                if at_boundary:
                    distributed.mean_(window, d)
                    w = check_finite(window, epoch * steps + window_start + 1, epoch * steps + i + 1, epoch + 1, out / "model" / "last.pt")
                    n = i + 1 - window_start
                    bar.set_postfix_str(f"G {w[0] / n:7.3f} D {w[1] / n:6.3f} cyc {w[4] / n:6.3f}")
                    now = time.perf_counter()  # after the sync above, so the window's time is real
                    pairs_per_sec = progress.rate(n * tc.batch_size, now - t_window)  # None: too short a window to time
                    logger.log_scalars({**{f"step/{k}": v / n for k, v in zip(LOSS_KEYS, w)}, "step/lr": opt_g.param_groups[0]["lr"],
                                        **({"step/pairs_per_sec": pairs_per_sec} if pairs_per_sec is not None else {}), **step_stats(device)},
                                       step=epoch * steps + i + 1)
                    t_window = now
                    window.zero_()
                    window_start = i + 1
                # several processes stop together, at a log boundary, when a signal reached any of them
                if bool(stop) if d.world == 1 else at_boundary and distributed.any_rank(bool(stop), d):
                    if window_start <= i:  # an unchecked window: never save NaN weights over the last good last.pt
                        check_finite(window, epoch * steps + window_start + 1, epoch * steps + i + 1, epoch + 1, out / "model" / "last.pt")
                    if d.main:
                        checkpoint.save(state(epoch, i + 1, order, distributed.mean_(sums, d), None), out / "model" / "last.pt")
                    bar.close()
                    say(f"stopped at epoch {epoch + 1}, step {i + 1}/{steps}; saved {out / 'model' / 'last.pt'}.\n"
                        f"Resume with the same overrides plus: train.resume=true hydra.run.dir={out}")
                    raise SystemExit(128 + (stop.signum or signal.SIGTERM))
            bar.close()
            elapsed = time.perf_counter() - t0
            lr = opt_g.param_groups[0]["lr"]  # the rate this epoch trained with
            sched_g.step()
            sched_d.step()
            n_steps = steps - start_step
            means = dict(zip(LOSS_KEYS, (distributed.mean_(sums, d) / steps).tolist()))
            in_sync = distributed.params_in_sync(nets, d)  # every rank takes part, before rank 0 works alone
            if not d.main:
                order, sums, start_step = None, None, 0
                continue
            pairs_per_sec = progress.rate(n_steps * tc.batch_size * d.world, elapsed)
            metrics = {"epoch": epoch + 1, "time_sec": round(elapsed, 3), **means,
                       "lr": lr, "steps": steps,  # 3 significant digits: a slow run's rate never rounds to 0
                       **({"pairs_per_sec": float(f"{pairs_per_sec:.3g}")} if pairs_per_sec is not None else {}),
                       **({"world_size": d.world, "ddp_in_sync": in_sync} if d.world > 1 else {})}
            if domains.truth is not None:
                metrics.update(score_synthetic(eval_g_ab, eval_g_ba, domains.a, domains.b, domains.truth, maps=maps))
            elif domains.val_a is not None:
                metrics.update(score_heldout(eval_g_ab, eval_g_ba, domains.val_a, domains.val_b, domains.a, domains.b, maps=maps))
            metrics["val_metric"] = validation_metric(metrics)
            improved = metrics["val_metric"] < best_val
            best_val = min(best_val, metrics["val_metric"])
            order, sums, start_step = None, None, 0
            keep = (epoch + 1) % tc.ckpt_every == 0 or epoch + 1 == tc.epochs
            paths = [out / "model" / n for n, on in (("best.pt", improved), (f"epoch_{epoch + 1:04d}.pt", keep)) if on]
            checkpoint.save(state(epoch + 1, 0, None, None, metrics), *paths, out / "model" / "last.pt")  # last.pt last
            log.append(metrics)
            logger.log_scalars({f"epoch/{k}": v for k, v in metrics.items()}, step=(epoch + 1) * steps)
            if tc.vis_every and ((epoch + 1) % tc.vis_every == 0 or epoch + 1 == tc.epochs):
                picture = visualize(eval_g_ab, eval_g_ba, vae, domains.convention, vis_a, vis_b)
                save_png(picture, out / "vis" / f"epoch_{epoch + 1:04d}.png")
                logger.log_image("vis", picture, step=(epoch + 1) * steps)
                write_curves(log.path, curves_png)
            clock.epoch_done(time.perf_counter() - t0, n_steps / steps)  # the whole epoch: steps, validation, saving
            say(summary_line(metrics, tc.epochs, clock.eta(epoch + 1)))
    value = float(metrics.get("val_metric", math.nan))
    if d.main and log.path.is_file():
        write_curves(log.path, curves_png)
        say(progress.closing_note(read_log(log.path), out, tc.epochs))
    logger.summary({**metrics, "best_val_metric": best_val})
    return value


class Ema:
    """Exponential moving average of a generator's weights: ``ema = decay * ema + (1 - decay) * w``
    after every step, one fused foreach kernel and no host sync (torch's AveragedModel reads its
    update counter back from the device on every step)."""

    def __init__(self, net: torch.nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(net).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        mine = [t for t in (*self.module.parameters(), *self.module.buffers()) if t.is_floating_point()]
        theirs = [t for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
        torch._foreach_lerp_(mine, theirs, 1 - self.decay)


def step_stats(device: torch.device) -> dict[str, float]:
    """Throughput-side scalars logged every log_every steps."""
    if device.type != "cuda":
        return {}
    return {"gpu_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30}


@torch.no_grad()
def visualize(g_ab, g_ba, vae, conv, real_a: torch.Tensor, real_b: torch.Tensor):
    """Columns A, G(A), B, F(B), labelled, decoded through the configured VAE."""
    decode = lambda z: vae.decode(conv.model_to_raw(z.float(), vae.space))  # noqa: E731
    return grid([decode(real_a), decode(g_ab(real_a)), decode(real_b), decode(g_ba(real_b))], labels=["A", "G(A)", "B", "F(B)"])


def summary_line(m: dict, epochs: int, eta_sec: float | None = None) -> str:
    line = (f"Epoch {m['epoch']}/{epochs} | G {m['loss_G']:.3f} D {m['loss_D']:.3f} cyc {m['loss_cyc']:.3f} "
            f"id {m['loss_id']:.3f} | lr {m['lr']:.2e} | {progress.fmt_rate(m.get('pairs_per_sec'))} pairs/s | "
            f"run ETA {progress.fmt_duration(eta_sec)}")
    base = lambda suffix: ", ".join(f"{k.replace('_', '-')} {m[f'base_{k}{suffix}']:.3f}" for k in BASELINES)  # noqa: E731
    if "val_swd" in m:
        line += f" | val_swd {m['val_swd']:.3f} (identity 1, {base('_val_swd')})"
    if "err" in m:
        line += f" | err G {m['err_G']:.3f} F {m['err_F']:.3f} (identity 1, {base('_G')})"
    return line


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        return train(cfg)
    except rundir.REFUSALS:
        raise  # the folder is another run's: write nothing there
    except Exception:
        # recorded in the job's folder, so a failed job of a sweep is visible next to the others
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out_dir) / "error.txt").write_text(traceback.format_exc())
        raise


if __name__ == "__main__":
    main()
