"""Benchmark the real training step: ``python -m lcgan.bench [compare=true] [model=...] [key=value ...]``
(``bench.eval.enabled=true``: the evaluation pipeline instead, see :mod:`lcgan.bench_eval`).

Times ``lcgan.train``'s step (built by :func:`lcgan.build.build_training`, with its CUDA
defaults: data on the GPU, bf16, channels-last, torch.compile, CUDA graphs) on random latents,
and prints one JSON object as its last line (also written to ``bench.output``).

``compare=true`` also runs, in the same process and on the same inputs, the plain eager step:
same model and weights built of torch's own layers (``nn.InstanceNorm2d``, ``nn.ReflectionPad2d``, as the
reference CycleGAN), fp16 autocast with GradScaler on CUDA, no compilation or graphs, NCHW, each batch
copied from host memory as a DataLoader would. It reports the speed-up (pairs/s over pairs/s; with
``bench.eager_batch_size`` the reference keeps its own batch, the first rows of the same batches, while
the optimized step runs ``train.batch_size``) and how far the losses of the two steps drift apart over
``bench.compare_steps`` identical steps from identical weights (at ``train.batch_size`` both).
``bench.rounds=N``: both steps timed N times, taking turns; each step's median time is reported, their ratio as the
speed-up, and the range of the rounds' ratios: the plain step's time moved by half between two processes of one call
on an H200 (84 vs 123 ms), and by 75-99 ms between the rounds of one process, while the optimized step's held 0.2%.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.flop_counter import FlopCounterMode

from lcgan import CONF_DIR, checkpoint, config
from lcgan.build import LOSS_KEYS, build_gan, build_training, check_sizes, memory_format
from lcgan.devices import resolve_device
from lcgan.models import InstanceNorm, ReflectionPad


def _variant(cfg: DictConfig, eager: bool, amp: str | None = None) -> DictConfig:
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        if eager:  # the plain step: no compilation, graphs, NHWC layout or stacked generator passes
            cfg.train.compile = cfg.train.cuda_graphs = cfg.train.channels_last = cfg.train.fuse_passes = False
            cfg.train.cudnn_benchmark = False
        if amp:
            cfg.train.amp = amp
    return cfg


def torch_layers(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with torch's own InstanceNorm and reflection pad in place of :mod:`lcgan.models`' layout-keeping
    ones (the same math; neither has parameters): the layers of the reference CycleGAN the plain step is."""
    for name, child in module.named_children():
        if isinstance(child, InstanceNorm):
            setattr(module, name, torch.nn.InstanceNorm2d(child.channels, eps=child.eps))
        elif isinstance(child, ReflectionPad):
            setattr(module, name, torch.nn.ReflectionPad2d(child.padding))
        else:
            torch_layers(child)
    return module


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """The step built from ``cfg`` with weights ``state``, fed from a fixed pool of batches.

    ``from_host``: the plain step, each batch copied from host memory and the model of torch's own layers.
    """

    def __init__(self, cfg: DictConfig, state: dict, batches: list, device: torch.device, from_host: bool) -> None:
        torch.manual_seed(cfg.seed)  # same replay-buffer draws in every variant
        gan = build_gan(cfg.model, cfg.bench.channels, train_cfg=cfg.train).to(device)
        gan.load_state_dict(state)
        if from_host:  # the plain step: the reference's layers too
            torch_layers(gan)
        self.step = build_training(cfg, gan, device).step
        # a process-wide flag that building a step sets: kept per runner, so two runners can take turns
        self.cudnn_benchmark = torch.backends.cudnn.benchmark
        self.device, self.from_host, self.i = device, from_host, 0
        layout = memory_format(cfg.train.channels_last, device)
        if not from_host:  # resident on the GPU, as lcgan.train keeps its datasets
            batches = [(a.to(device).contiguous(memory_format=layout), b.to(device).contiguous(memory_format=layout)) for a, b in batches]
        self.batches = batches

    def __call__(self, n: int) -> torch.Tensor:
        """Run ``n`` steps; their losses, ``(n, len(LOSS_KEYS))`` on the device."""
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        losses = []
        for _ in range(n):
            a, b = self.batches[self.i % len(self.batches)]
            self.i += 1
            if self.from_host:  # as a DataLoader with pin_memory would hand them over
                a, b = a.to(self.device, non_blocking=True), b.to(self.device, non_blocking=True)
            out = self.step(a, b)
            losses.append(torch.stack([out[k].float() for k in LOSS_KEYS]))
        return torch.stack(losses) if losses else torch.empty(0, len(LOSS_KEYS))


def timed(runner: Runner, n: int, device: torch.device) -> tuple[float, torch.Tensor, float | None]:
    """Time ``n`` steps of a built, warmed ``runner``: ms per step, their losses (on the host), peak GB on CUDA."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    losses = runner(n)
    _sync(device)
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return 1000 * elapsed / n, losses.cpu(), peak


def run_steps(cfg: DictConfig, state: dict, batches: list, n: int, device: torch.device, from_host: bool, warmup: int = 0) -> dict:
    """Build a :class:`Runner`, run ``warmup`` untimed steps, then time ``n`` steps."""
    t0 = time.perf_counter()
    runner = Runner(cfg, state, batches, device, from_host)
    runner(warmup)
    _sync(device)
    warm_s = time.perf_counter() - t0
    ms, losses, peak = timed(runner, n, device)
    return {"ms_per_step": ms, "warmup_s": warm_s, "losses": losses, "peak_mem_gb": peak, "runner": runner}


def interleaved(fast: Runner, eager: Runner, n: int, rounds: int, device: torch.device, pairs: tuple[int, int]) -> list[dict]:
    """``rounds`` more timings of ``n`` steps each, the optimized and the plain step taking turns, so that a slow
    stretch of the machine (clocks, the host's launch speed, a neighbour) falls on both. ``pairs``: the two steps'
    batches; each round's speed-up is pairs/s over pairs/s."""
    out = []
    for _ in range(rounds):
        ms_fast, ms_eager = timed(fast, n, device)[0], timed(eager, n, device)[0]
        out.append({"ms_per_step": round(ms_fast, 3), "eager_ms_per_step": round(ms_eager, 3),
                    "speedup": round(pairs[0] / ms_fast / (pairs[1] / ms_eager), 3)})
    return out


def count_flops(cfg: DictConfig, state: dict, batch: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> int:
    """FLOPs of one training step (forward and backward of G, F, D_A, D_B), counted in eager mode."""
    eager = _variant(cfg, eager=True)
    gan = build_gan(eager.model, cfg.bench.channels, train_cfg=eager.train).to(device)
    gan.load_state_dict(state)
    step = build_training(eager, gan, device).step
    with FlopCounterMode(display=False) as counter:
        step(batch[0].to(device), batch[1].to(device))
    return counter.get_total_flops()


def profile(cfg: DictConfig, state: dict, batches: list, device: torch.device, n: int = 10) -> list[dict]:
    """Where the optimized step's GPU time goes: the top kernels over ``n`` steps (torch.profiler)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    runner = Runner(cfg, state, batches, device, from_host=False)
    runner(cfg.bench.warmup)  # compilation and graph capture stay outside the window
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        runner(n)
        _sync(device)
    attr = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)
    total = sum(getattr(e, attr) for e in events if e.device_type.name == ("CUDA" if device.type == "cuda" else "CPU"))
    print(prof.key_averages().table(sort_by=attr, row_limit=25))
    return [{"name": e.key[:80], "ms_total": round(getattr(e, attr) / 1000, 3), "calls": e.count,
             "share": round(getattr(e, attr) / max(total, 1), 4)} for e in events[:15]]


def bench(cfg: DictConfig) -> dict:
    config.check(cfg)
    bc, tc = cfg.bench, cfg.train
    device = resolve_device(cfg.device)
    if bc.eval.enabled:  # the evaluation pipeline instead of the training step
        from lcgan.bench_eval import bench_eval

        result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
                  **bench_eval(bc.eval.images, bc.eval.loop_images, bc.eval.batch_size, bc.eval.image_size, device, cfg.seed,
                               list(bc.eval.batch_sizes), bc.eval.png, bc.eval.profile_batches, bc.eval.compile,
                               list(bc.eval.compile_modes))}
        checkpoint.atomic_write_bytes(bc.output, (json.dumps(result, indent=2) + "\n").encode())
        print(json.dumps(result))
        return result
    # the plain eager reference keeps its own batch (bench.eager_batch_size): a larger optimized batch is compared in pairs/s
    eager_bs = bc.eager_batch_size or tc.batch_size
    if cfg.compare and eager_bs > tc.batch_size:  # refused before minutes of compilation, not after
        raise config.ConfigError(f"bench.eager_batch_size={eager_bs} is larger than train.batch_size={tc.batch_size}; "
                                 "set it to the reference's batch, at most the optimized step's")
    torch.manual_seed(cfg.seed)
    gan = build_gan(cfg.model, bc.channels, train_cfg=tc)
    check_sizes(gan, (bc.latent_size, bc.latent_size))
    state = gan.state_dict()
    g = torch.Generator().manual_seed(cfg.seed)
    shape = (tc.batch_size, bc.channels, bc.latent_size, bc.latent_size)
    # a pool of distinct batches, kept in (pinned) host memory; latents at model scale (std ~0.45)
    batches = [(torch.randn(shape, generator=g) * 0.45, torch.randn(shape, generator=g) * 0.45 + 0.1) for _ in range(bc.n_batches)]
    if device.type == "cuda":
        batches = [(a.pin_memory(), b.pin_memory()) for a, b in batches]
    flops = count_flops(cfg, state, batches[0], device)
    fast = run_steps(cfg, state, batches, bc.steps, device, from_host=False, warmup=bc.warmup)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "settings": {
            "model": OmegaConf.to_container(cfg.model.generator, resolve=True),
            "batch_size": tc.batch_size, "latent": list(shape[1:]), "amp": tc.amp if device.type == "cuda" else "none",
            "compile": tc.compile, "cuda_graphs": tc.cuda_graphs, "channels_last": tc.channels_last,
            "cudnn_benchmark": tc.cudnn_benchmark, "fuse_passes": tc.fuse_passes,
            "fake_buffer_size": tc.fake_buffer_size, "lambda_id": tc.lambda_id, "steps": bc.steps, "warmup": bc.warmup,
        },
        "ms_per_step": round(fast["ms_per_step"], 3),
        "pairs_per_s": round(tc.batch_size * 1000 / fast["ms_per_step"], 1),
        "tflops_per_s": round(flops / (fast["ms_per_step"] / 1000) / 1e12, 2),
        "gflop_per_step": round(flops / 1e9, 2),
        "peak_mem_gb": fast["peak_mem_gb"],
        "warmup_s": round(fast["warmup_s"], 1),
    }
    if cfg.compare:
        eager_cfg = _variant(cfg, eager=True, amp=bc.eager_amp)
        eager_batches = [(a[:eager_bs], b[:eager_bs]) for a, b in batches]
        eager = run_steps(eager_cfg, state, eager_batches, bc.steps, device, from_host=True, warmup=bc.eager_warmup)
        ms, eager_ms = fast["ms_per_step"], eager["ms_per_step"]
        if bc.rounds > 1:  # the same two runners taking turns (the first round is above): every figure becomes the median round's
            rounds = [{"ms_per_step": round(ms, 3), "eager_ms_per_step": round(eager_ms, 3),
                       "speedup": round(tc.batch_size / ms / (eager_bs / eager_ms), 3)}]
            rounds += interleaved(fast["runner"], eager["runner"], bc.steps, bc.rounds - 1, device, (tc.batch_size, eager_bs))
            median = lambda key: sorted(r[key] for r in rounds)[(len(rounds) - 1) // 2]  # noqa: E731
            ms, eager_ms, ratios = median("ms_per_step"), median("eager_ms_per_step"), [r["speedup"] for r in rounds]
            result.update(speedup_range=[round(min(ratios), 2), round(max(ratios), 2)], rounds=rounds)
        result.update(
            ms_per_step=round(ms, 3),
            pairs_per_s=round(tc.batch_size * 1000 / ms, 1),
            tflops_per_s=round(flops / (ms / 1000) / 1e12, 2),
            eager_batch_size=eager_bs,
            eager_ms_per_step=round(eager_ms, 3),
            eager_pairs_per_s=round(eager_bs * 1000 / eager_ms, 1),
            eager_tflops_per_s=round(flops * eager_bs / tc.batch_size / (eager_ms / 1000) / 1e12, 2),
            eager_peak_mem_gb=eager["peak_mem_gb"],
            speedup=round(tc.batch_size / ms / (eager_bs / eager_ms), 2),  # pairs/s over pairs/s
        )
        del fast["runner"], eager["runner"]  # their memory (CUDA graphs' pools) before the agreement's runs
        # Agreement: N identical steps from identical weights and inputs. GAN training amplifies
        # rounding, so the optimized step's drift from the plain step in the same dtype is judged
        # against the drift that the dtype alone causes (plain step in that dtype vs plain fp32).
        n = bc.compare_steps
        runs = {
            "optimized": run_steps(cfg, state, batches, n, device, from_host=False)["losses"],
            "eager_same_dtype": run_steps(_variant(cfg, eager=True), state, batches, n, device, from_host=True)["losses"],
            "eager_fp32": run_steps(_variant(cfg, eager=True, amp="none"), state, batches, n, device, from_host=True)["losses"],
            "eager_fp16": run_steps(eager_cfg, state, batches, n, device, from_host=True)["losses"],
        }
        main = [LOSS_KEYS.index(k) for k in ("loss_G", "loss_cyc", "loss_D")]
        rel = lambda x, y: ((x[:, main] - y[:, main]).abs() / y[:, main].abs().clamp_min(1e-2))  # noqa: E731
        for a, b in (("optimized", "eager_same_dtype"), ("optimized", "eager_fp16"), ("eager_same_dtype", "eager_fp32")):
            diff = rel(runs[a], runs[b])
            result[f"rel_loss_diff_{a}_vs_{b}"] = {"step1": round(diff[0].max().item(), 5), f"max_{n}_steps": round(diff.max().item(), 5)}
    if bc.profile:
        result["profile_top"] = profile(cfg, state, batches, device)
    checkpoint.atomic_write_bytes(bc.output, (json.dumps(result, indent=2) + "\n").encode())
    print(json.dumps(result))
    return result


@hydra.main(config_path=CONF_DIR, config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with config.user_errors():  # a bad setting: one line, no traceback
        Path(cfg.bench.output).parent.mkdir(parents=True, exist_ok=True)
        bench(cfg)


if __name__ == "__main__":
    main()
