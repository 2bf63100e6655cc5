"""Throughput of ``lcgan.evaluate``'s own pipeline (:func:`lcgan.scoring.score_outputs`), where its time goes, and
what each speed setting does to it and to its numbers: ``python -m lcgan.bench bench.eval.enabled=true``.

Real-size, randomly initialised networks (no downloads): the SD1.5 VAE architecture (diffusers
``AutoencoderKL``), a resnet9 generator, LPIPS-alex, CLIP ViT-B-32 and Inception-v3, on random uint8
images: encode -> G -> decode -> uint8 -> LPIPS and CLIP against the source, Inception features. In one run,
on one device, every :class:`Variant` of :func:`variants` is timed on the same images:

- ``current``: what ``lcgan.evaluate`` did before this benchmark's settings (clean-fid's PIL resize on CPU threads,
  cuDNN heuristics), bf16 and fp32 (``current_fp32``), and the per-image loop (batch 1) the issue compares with;
- the Inception resize on the device (``eval.fid.resize=torch``), cuDNN's autotuner, fp32, other batch sizes,
  the VAE in bf16 weights, and (``compile``) the VAE through torch.compile;
- with PNGs written as ``lcgan.evaluate`` writes them (``png``), and as it wrote them before (one thread, zlib 6).

Then a profile pass of :data:`PROFILED` synchronises the device around each stage (encode, CLIP of the sources,
upload, G, decode, uint8, LPIPS, CLIP, Inception resize and forward, host copy, PNG) and reports each one's
milliseconds per image: what limits the pipeline. The timed passes themselves never synchronise per stage.
Agreement: bf16 against fp32 (FID's relative difference, largest per-image LPIPS and CLIP differences) and
the device resize against clean-fid's (largest pixel difference, FID's relative difference).
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lcgan.devices import autocast, channels_last, describe
from lcgan.fid import Fid, fid_from_features, gaussian
from lcgan.images import from_uint8
from lcgan.latents import Convention, LatentSpace
from lcgan.metrics import Clip, Lpips
from lcgan.models import ResnetGenerator
from lcgan.scoring import Metrics, encode, score_outputs, write_pngs
from lcgan.vae import VAE

SD15_VAE = dict(  # diffusers' SD1.5 VAE config (stable-diffusion-v1-5/vae/config.json)
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=512,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
RESNET9 = dict(ngf=64, n_blocks=9, n_downsampling=2)
PNG_WRITERS = ("", "pool", "serial")  # none | lcgan.evaluate's (scoring.write_pngs) | evaluate's before: one thread, zlib 6
PROFILED = ("current_png", "torch_resize_cudnn_benchmark_png", "torch_resize_cudnn_benchmark_vae_bf16")  # stage by stage


class RandomKLVAE(VAE):
    """A randomly initialised diffusers ``AutoencoderKL`` of ``config``, in lcgan's VAE interface (raw latents).

    :meth:`in_bf16`: a copy with bf16 weights that runs outside autocast, so that GroupNorm, SiLU and the residual
    sums stay in bf16 too (autocast runs GroupNorm in fp32: a round trip through fp32 memory at every norm).
    :meth:`compiled`: the same weights, encode and decode through ``torch.compile`` (fused norms and activations).
    """

    def __init__(self, config: dict, device: torch.device) -> None:
        from diffusers import AutoencoderKL

        self.device, self.dtype = device, torch.float32
        self.vae = AutoencoderKL(**config).to(device).eval().requires_grad_(False)
        self.space = LatentSpace(channels=config["latent_channels"], downsample=2 ** (len(config["block_out_channels"]) - 1))
        self._encode, self._decode = self._calls(self.vae)

    @staticmethod
    def _calls(vae):
        return (lambda x: vae.encode(x).latent_dist.mean), (lambda z: vae.decode(z).sample)

    def in_bf16(self) -> RandomKLVAE:
        twin = copy.copy(self)
        twin.vae, twin.dtype = copy.deepcopy(self.vae).to(torch.bfloat16), torch.bfloat16
        twin._encode, twin._decode = self._calls(twin.vae)
        return twin

    def compiled(self, mode: str = "default") -> RandomKLVAE:
        twin = copy.copy(self)
        twin._encode, twin._decode = (torch.compile(f, dynamic=False, mode=mode) for f in self._calls(self.vae))
        return twin

    def _dtype_context(self):
        return torch.autocast(self.device.type, enabled=False) if self.dtype != torch.float32 else nullcontext()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        with self._dtype_context():
            return self._encode(x.to(self.device, self.dtype)).float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        with self._dtype_context():
            return self._decode(z.to(self.device, self.dtype)).float().clamp(-1, 1)


@dataclass(frozen=True)
class Variant:
    """One way to run the pipeline: the settings the benchmark compares."""

    resize: str  # eval.fid.resize: pil | torch
    amp: bool  # bf16 autocast (eval.amp=auto on CUDA) or fp32
    batch: int  # images per call (eval.batch_size)
    cudnn_benchmark: bool  # cuDNN's autotuner (lcgan.scoring.prepare turns it on for evaluate on CUDA)
    png: str = ""  # PNG_WRITERS: write every output as evaluate does
    vae_bf16: bool = False  # the VAE in bf16 weights outside autocast (RandomKLVAE.in_bf16; lcgan.vae has no such setting yet)
    compile: bool = False  # the VAE's encode and decode through torch.compile (RandomKLVAE.compiled)
    compile_mode: str = "default"  # torch.compile's mode (e.g. max-autotune-no-cudagraphs: Triton convolution templates too)


def variants(batch: int, batch_sizes: list[int], png: bool, compile: bool = False, compile_modes: list[str] = ()) -> dict[str, Variant]:
    """The variants timed, by name: ``current`` first (the reference), then one change at a time; the compiled VAE
    last (minutes of compilation on a fresh machine), also at every batch size and in every extra compile mode."""
    current = Variant("pil", True, batch, False)
    fast = Variant("torch", True, batch, True)
    out = {"current": current, "current_fp32": replace(current, amp=False), "loop": replace(current, batch=1),
           "torch_resize": replace(current, resize="torch"), "torch_resize_cudnn_benchmark": fast,
           "torch_resize_cudnn_benchmark_fp32": replace(fast, amp=False),
           "torch_resize_cudnn_benchmark_vae_bf16": replace(fast, vae_bf16=True)}
    out.update({f"torch_resize_cudnn_benchmark_batch{b}": replace(fast, batch=b) for b in batch_sizes if b != batch})
    if png:
        out.update(current_png_serial=replace(current, png="serial"), current_png=replace(current, png="pool"),
                   torch_resize_cudnn_benchmark_png=replace(fast, png="pool"))
    if compile:  # in bf16 autocast, also in bf16 weights, and in fp32 (evaluate's default eval.amp=none)
        out.update(torch_resize_cudnn_benchmark_compiled=replace(fast, compile=True),
                   torch_resize_cudnn_benchmark_compiled_vae_bf16=replace(fast, compile=True, vae_bf16=True),
                   torch_resize_cudnn_benchmark_compiled_fp32=replace(fast, compile=True, amp=False))
        out.update({f"torch_resize_cudnn_benchmark_compiled_batch{b}": replace(fast, compile=True, batch=b) for b in batch_sizes if b != batch})
        out.update({f"torch_resize_cudnn_benchmark_compiled_{m.replace('-', '_')}": replace(fast, compile=True, compile_mode=m)
                    for m in compile_modes})
    return out


class StageTimer:
    """Wall time per pipeline stage, the device synchronised before and after each: a profile, never a throughput.
    Stages may run on the host thread too (PNG, PIL resize): the totals are kept under a lock."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self.lock = device, defaultdict(float), threading.Lock()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        _sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            _sync(self.device)
            with self.lock:
                self.seconds[stage] += time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def vae_flops(vae_config: dict, generator: dict, image_size: int) -> dict[str, float]:
    """GFLOP per image of encode, G and decode, counted on the meta device (no memory, no time)."""
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        vae = AutoencoderKL(**vae_config)
        side = image_size // 2 ** (len(vae_config["block_out_channels"]) - 1)
        g = ResnetGenerator(vae_config["latent_channels"], **generator)
        z = torch.zeros(1, vae_config["latent_channels"], side, side)
        calls = {"encode": lambda: vae.encode(torch.zeros(1, 3, image_size, image_size)), "translate": lambda: g(z),
                 "decode": lambda: vae.decode(z)}
        out = {}
        for stage, call in calls.items():
            with FlopCounterMode(display=False) as counter:
                call()
            out[stage] = counter.get_total_flops() / 1e9
    return out


def agreement(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], mu: np.ndarray, sigma: np.ndarray,
              names: tuple[str, str] = ("fp32", "bf16")) -> dict:
    """How far ``other``'s scores (per-image ``lpips``, ``clip``, Inception ``feats``) are from ``reference``'s:
    FID of each against the Gaussian ``(mu, sigma)`` (``fid_<name>``), their relative difference, and the largest
    per-image differences of LPIPS and of the CLIP cosine."""
    fid_ref, fid_other = fid_from_features(reference["feats"], mu, sigma), fid_from_features(other["feats"], mu, sigma)
    return {
        f"fid_{names[0]}": fid_ref, f"fid_{names[1]}": fid_other,
        "fid_rel_diff": abs(fid_other - fid_ref) / max(abs(fid_ref), 1e-12),
        "lpips_max_abs_diff": float(np.abs(other["lpips"] - reference["lpips"]).max()),
        "clip_max_abs_diff": float(np.abs(other["clip"] - reference["clip"]).max()),
    }


class EvalBench:
    """The networks and images of one benchmark run, and the ways to time them: :meth:`timed` (a throughput pass),
    :meth:`profiled` (stage by stage) and :meth:`features` (Inception alone, for the resize's agreement)."""

    def __init__(self, vae: RandomKLVAE, g: torch.nn.Module, metrics: Metrics, images: torch.Tensor, workers: int,
                 compile: bool, compile_modes: list[str] = ()) -> None:
        self.vae, self.g, self.metrics, self.images = vae, g, metrics, images
        self.device, self.inception = vae.device, metrics.fid.inception
        self.vae_bf16 = vae.in_bf16()
        # by (bf16 weights, compile mode); torch.compile is lazy: nothing compiles before a variant runs
        self.vae_compiled = {(False, "default"): vae.compiled(), (True, "default"): self.vae_bf16.compiled(),
                             **{(False, m): vae.compiled(m) for m in compile_modes}} if compile else {}
        channels_last(vae.vae, self.vae_bf16.vae, g, metrics.lpips.model, metrics.clip.model)
        self.source_gaussian = None  # Inception Gaussian of the sources (set by agreements(), used for the compiled variants)
        self.convention = Convention()  # model space as training sees it: the default latent divisor
        self.png_pool = ThreadPoolExecutor(workers, thread_name_prefix="bench-png")
        self.png_dir = tempfile.TemporaryDirectory(prefix="lcgan-bench-png-")

    def close(self) -> None:
        self.png_pool.shutdown()
        self.png_dir.cleanup()

    def _saver(self, writer: str):
        folder = Path(self.png_dir.name)
        if writer == "pool":
            return lambda kind, start, x8: write_pngs(folder, [f"{start + i:05d}" for i in range(len(x8))], x8, self.png_pool)
        if writer == "serial":  # lcgan.evaluate's writer before: PIL's default zlib level 6, one image after another
            return lambda kind, start, x8: [Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{start + i:05d}.png")
                                            for i, img in enumerate(x8)]
        return None

    @contextmanager
    def settings(self, v: Variant) -> Iterator[None]:
        """``v``'s resize and cuDNN autotuner for the duration (both are process-wide switches)."""
        before = self.inception.resize, torch.backends.cudnn.benchmark
        self.inception.resize, torch.backends.cudnn.benchmark = v.resize, v.cudnn_benchmark
        try:
            yield
        finally:
            self.inception.resize, torch.backends.cudnn.benchmark = before

    def pipeline(self, x8: torch.Tensor, v: Variant, timer: StageTimer | None = None) -> dict[str, np.ndarray]:
        """What ``lcgan.evaluate`` does for one direction: encode, CLIP of the sources, then :func:`score_outputs`."""
        stage = timer or (lambda name: nullcontext())
        vae = self.vae_compiled[v.vae_bf16, v.compile_mode] if v.compile else self.vae_bf16 if v.vae_bf16 else self.vae
        with stage("encode"):  # with the upload of the uint8 sources
            z_raw = encode(vae, x8, v.batch, v.amp, "encode")
        with stage("clip_source"), autocast(self.device, v.amp):
            src_emb = torch.cat([self.metrics.clip.embed(from_uint8(c.to(self.device, non_blocking=True))).float() for c in x8.split(v.batch)])
        return score_outputs({"model": self.g}, z_raw, x8, src_emb, vae, self.convention, self.metrics, v.batch, v.amp, self._saver(v.png),
                             timer)["model"]

    def timed(self, v: Variant, n: int) -> dict:
        """images/s of ``v`` on the first ``n`` images after a warm-up batch, its scores, peak memory and warm-up time."""
        x8 = self.images[:n]
        with self.settings(v):
            t0 = time.perf_counter()
            self.pipeline(x8[: v.batch], v)  # warm-up: cuDNN algorithm choice, compilation, allocator, threads
            _sync(self.device)
            warmup_s = time.perf_counter() - t0
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            t0 = time.perf_counter()
            scores = self.pipeline(x8, v)
            _sync(self.device)
            rate = len(x8) / (time.perf_counter() - t0)
        peak = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2) if self.device.type == "cuda" else None
        print(f"  {v}: {rate:.1f} images/s (warm-up {warmup_s:.1f} s)", flush=True)
        return {"rate": rate, "scores": scores, "peak_mem_gb": peak, "warmup_s": round(warmup_s, 1)}

    def profiled(self, v: Variant, batches: int, gflop: dict[str, float]) -> dict:
        """Milliseconds per image of each stage of ``v`` over ``batches`` batches, their shares of the whole, and the
        TFLOP/s of the stages whose GFLOP per image ``gflop`` gives."""
        x8 = self.images[: batches * v.batch]
        with self.settings(v):
            self.pipeline(x8[: v.batch], v)
            timer = StageTimer(self.device)
            t0 = time.perf_counter()
            self.pipeline(x8, v, timer)
            total = time.perf_counter() - t0
        ms = lambda s: round(1000 * s / len(x8), 3)  # noqa: E731
        stages = dict(sorted(timer.seconds.items(), key=lambda kv: -kv[1]))
        return {"variant": asdict(v), "images": len(x8), "total_ms_per_image": ms(total),
                "stages_ms_per_image": {k: ms(s) for k, s in stages.items()},
                "stages_share": {k: round(s / total, 4) for k, s in stages.items()},
                "unattributed_ms_per_image": ms(total - sum(stages.values())),
                "tflops_per_s": {k: round(f * len(x8) / stages[k] / 1e3, 2) for k, f in gflop.items() if stages.get(k)}}

    def features(self, v: Variant, batch: int) -> tuple[np.ndarray, torch.Tensor]:
        """Inception features of every source image with ``v``'s resize (fp32), and the first batch resized."""
        with self.settings(v):
            feats = np.concatenate([self.inception(c) for c in self.images.split(batch)])
            return feats, self.inception.preprocess(self.images[:batch]).cpu()


def bench_eval(n_images: int, loop_images: int, batch_size: int, image_size: int, device: torch.device, seed: int = 0,
               batch_sizes: list[int] = (), png: bool = True, profile_batches: int = 4, compile: bool = False,
               compile_modes: list[str] = (), vae_config: dict = SD15_VAE, generator: dict = RESNET9, metrics: Metrics | None = None) -> dict:
    """Time every :func:`variants` entry, profile three of them stage by stage, and measure the agreement of bf16
    with fp32 and of the device resize with clean-fid's; returns the numbers.

    ``batch_size``: the batch of the comparison (``batch_sizes``: more, for the fastest settings); ``png``: also
    time PNG writing; ``profile_batches``: batches of the profile pass (0: none); ``compile``: also time the VAE
    through torch.compile, last (everything else is printed before it starts: a run cut short keeps it), at every batch
    size and in each of ``compile_modes`` too, and profile the compiled bf16 variant stage by stage;
    ``metrics``: the metric networks (default: random LPIPS-alex, CLIP ViT-B-32 and Inception-v3 at full size).
    """
    torch.manual_seed(seed)
    vae = RandomKLVAE(vae_config, device)
    g = ResnetGenerator(vae.space.channels, **generator).to(device).eval().requires_grad_(False)
    workers = min(16, os.cpu_count() or 1)  # Inception's resize and PNG threads
    metrics = metrics or Metrics(Lpips("alex", random=True, device=device, seed=seed),
                                 Clip("ViT-B-32", random=True, device=device, seed=seed + 1),
                                 Fid(random=True, device=device, seed=seed + 2, workers=workers))
    images = torch.randint(0, 256, (n_images, 3, image_size, image_size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    if device.type == "cuda":
        images = images.pin_memory()
    runs = variants(batch_size, list(batch_sizes), png, compile, list(compile_modes))
    print(f"lcgan.bench eval | {describe(device)} | torch {torch.__version__} | {n_images} images at {image_size}px, "
          f"batch {batch_size} (also {', '.join(map(str, batch_sizes)) or 'no other'}), per-image loop on {loop_images} | "
          f"{len(runs)} variants: {', '.join(runs)}", flush=True)
    gflop = vae_flops(vae_config, generator, image_size)
    bench = EvalBench(vae, g, metrics, images, workers, compile, list(compile_modes))
    results, failed = {}, {}
    try:
        for name, v in runs.items():
            if not v.compile:
                results[name] = bench.timed(v, loop_images if name == "loop" else n_images)
        profile = {name: bench.profiled(runs[name], profile_batches, gflop) for name in PROFILED if profile_batches and name in runs}
        measured = {"eval_profile": profile, "eval_gflop_per_image": {k: round(f, 2) for k, f in gflop.items()},
                    "eval_tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
                    **agreements(bench, runs, {k: r["scores"] for k, r in results.items()}, batch_size)}
        for name, v in runs.items():
            if v.compile:
                print(f"lcgan.bench eval, before compiling: {json.dumps({**speeds(results, runs, failed), **measured})}", flush=True)
                try:
                    results[name] = bench.timed(v, n_images)
                except Exception as e:  # the compiler's failure is a result too: the rest stands
                    failed[name] = f"{type(e).__name__}: {str(e).strip()[:300]}"
                else:  # what compiling (and its dtype) does to the numbers: against the uncompiled fp32 pipeline
                    measured[f"eval_{name.removeprefix('torch_resize_cudnn_benchmark_')}_vs_fp32"] = _rounded(agreement(
                        results["torch_resize_cudnn_benchmark_fp32"]["scores"], results[name]["scores"], *bench.source_gaussian,
                        names=("fp32", "compiled")))
                    if name == "torch_resize_cudnn_benchmark_compiled" and profile_batches:  # where the compiled time goes
                        measured["eval_profile_compiled"] = bench.profiled(v, profile_batches, gflop)
    finally:
        bench.close()
    return {"eval_images": n_images, "eval_image_size": image_size, "eval_batch_size": batch_size,
            **speeds(results, runs, failed), **measured}


def speeds(results: dict[str, dict], runs: dict[str, Variant], failed: dict[str, str]) -> dict:
    """images/s of every variant timed, the speed-ups over the per-image loop, and the fastest."""
    loop_rate = results["loop"]["rate"]
    best = max((k for k in results if k != "loop"), key=lambda k: results[k]["rate"])
    return {
        "eval_images_per_s": round(results["current"]["rate"], 1),  # the figures of the earlier rows, for comparison
        "eval_fp32_images_per_s": round(results["current_fp32"]["rate"], 1),
        "eval_loop_images_per_s": round(loop_rate, 1),
        "eval_speedup": round(results["current"]["rate"] / loop_rate, 2),
        "eval_best": {"variant": best, **asdict(runs[best]), "images_per_s": round(results[best]["rate"], 1),
                      "speedup_vs_loop": round(results[best]["rate"] / loop_rate, 2)},
        "eval_variants": {k: {**asdict(runs[k]), "images_per_s": round(r["rate"], 1), "speedup_vs_loop": round(r["rate"] / loop_rate, 2),
                              "peak_mem_gb": r["peak_mem_gb"], "warmup_s": r["warmup_s"]} for k, r in results.items()},
        "eval_failed": failed,
    }


def agreements(bench: EvalBench, runs: dict[str, Variant], scores: dict[str, dict[str, np.ndarray]], batch: int) -> dict:
    """bf16 against fp32 (every FID against the fp32 features of the sources); the device resize against PIL's."""
    (src_pil, resized_pil), (src_torch, resized_torch) = (bench.features(runs[k], batch) for k in ("current", "torch_resize"))
    mu, sigma = bench.source_gaussian = gaussian(src_pil)  # kept for the compiled variants' agreement
    mu_out, sigma_out = gaussian(scores["current_fp32"]["feats"])
    fid_pil, fid_torch = (fid_from_features(f, mu_out, sigma_out) for f in (src_pil, src_torch))
    fast_fp32 = scores["torch_resize_cudnn_benchmark_fp32"]
    return {
        "eval_bf16_vs_fp32": _rounded(agreement(scores["current_fp32"], scores["current"], mu, sigma)),
        "eval_bf16_vs_fp32_fast": _rounded(agreement(fast_fp32, scores["torch_resize_cudnn_benchmark"], mu, sigma)),
        "eval_vae_bf16_vs_fp32": _rounded(agreement(fast_fp32, scores["torch_resize_cudnn_benchmark_vae_bf16"], mu, sigma)),
        "eval_torch_vs_pil_resize": {
            "pixel_max_abs_diff": round(float((resized_torch - resized_pil).abs().max()), 6),
            # the random sources (the worst case for a resize) with each resize, against the fp32 outputs' Gaussian
            "fid_rel_diff_sources": float(abs(fid_torch - fid_pil) / max(abs(fid_pil), 1e-12)),
            # the pipeline's outputs (bf16, the same settings but the resize) against the sources' Gaussian
            "outputs": _rounded(agreement(scores["current"], scores["torch_resize"], mu, sigma, names=("pil", "torch"))),
        },
    }


def _rounded(d: dict) -> dict:
    return {k: round(v, 6) for k, v in d.items()}
