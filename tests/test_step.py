"""The training step's speed switches keep the math: compared on CPU against the plain step."""
from __future__ import annotations

import copy

import pytest
import torch

from lcgan.bench import bench, torch_layers
from lcgan.buffer import FakeBuffer
from lcgan.cyclegan import CycleGAN, CycleGANStep, LossWeights
from lcgan.models import InstanceNorm, PatchDiscriminator, ReflectionPad, ResnetGenerator, instance_norm


def _gan(seed=0):
    torch.manual_seed(seed)
    g = lambda: ResnetGenerator(4, ngf=8, n_blocks=2, n_downsampling=1)  # noqa: E731
    d = lambda: PatchDiscriminator(4, ndf=8, n_layers=2)  # noqa: E731
    return CycleGAN(g(), g(), d(), d())


def _run(gan, fuse, steps=3, weights=None):
    opt_g = torch.optim.Adam(list(gan.g_ab.parameters()) + list(gan.g_ba.parameters()), lr=1e-3)
    opt_d = torch.optim.Adam(list(gan.d_a.parameters()) + list(gan.d_b.parameters()), lr=1e-3)
    weights = weights or LossWeights(lambda_id=0.5, lambda_anchor=1.0)
    step = CycleGANStep(gan, opt_g, opt_d, weights, FakeBuffer(4), FakeBuffer(4), None,
                        torch.amp.GradScaler("cpu", enabled=False), fuse_passes=fuse)
    torch.manual_seed(1)
    out = []
    for _ in range(steps):
        a, b = torch.randn(4, 4, 16, 16) * 0.4, torch.randn(4, 4, 16, 16) * 0.4 + 0.2
        out.append({k: v.item() for k, v in step(a, b).items()})
    return out


# the fused step stacks differently with and without the identity and the cycle: each combination against the plain one
@pytest.mark.parametrize("weights", [LossWeights(lambda_id=0.5, lambda_anchor=1.0), LossWeights(lambda_id=0.0),
                                     LossWeights(lambda_id=0.5, lambda_cyc=0.0), LossWeights(lambda_id=0.0, lambda_cyc=0.0)],
                         ids=["id_cyc", "cyc_only", "id_only", "gan_only"])
def test_fused_generator_passes_match_plain_step(weights):
    plain_gan = _gan()
    fused_gan = copy.deepcopy(plain_gan)
    plain, fused = _run(plain_gan, fuse=False, weights=weights), _run(fused_gan, fuse=True, weights=weights)
    for p, f in zip(plain, fused):
        for k in p:
            assert abs(p[k] - f[k]) <= 1e-4 * max(1.0, abs(p[k])), (k, p[k], f[k])
    # compare what the nets compute, not raw weights: a conv bias right before InstanceNorm has a
    # zero gradient up to rounding, which Adam normalises into arbitrary (and harmless) steps
    z = torch.randn(2, 4, 16, 16) * 0.4
    for name in ("g_ab", "g_ba", "d_a", "d_b"):
        x, y = getattr(plain_gan, name)(z), getattr(fused_gan, name)(z)
        assert torch.allclose(x, y, atol=1e-4), name


# lcgan.bench with compare=true on CPU in seconds: a tiny model, batch 4, 2 timed steps
TINY_BENCH = ["model=small", "model.generator.ngf=8", "model.generator.n_blocks=1", "model.discriminator.ndf=8",
              "model.discriminator.n_layers=2", "train.batch_size=4", "bench.latent_size=16", "bench.steps=2", "bench.warmup=1",
              "bench.eager_warmup=1", "bench.compare_steps=2", "compare=true", "device=cpu"]


def test_bench_runs_and_compares_on_cpu(tmp_path):
    from tests.conftest import compose_cfg

    cfg = compose_cfg("bench", [*TINY_BENCH, f"out_dir={tmp_path}"])
    result = bench(cfg)
    assert result["pairs_per_s"] > 0 and result["gflop_per_step"] > 0 and result["speedup"] > 0
    # on CPU the "optimized" step is the plain one with stacked generator passes: same math
    assert result["rel_loss_diff_optimized_vs_eager_same_dtype"]["max_2_steps"] < 1e-3
    assert (tmp_path / "bench.json").read_text().strip().startswith("{")


def test_bench_rounds_take_turns_and_report_the_median_round(tmp_path):
    from tests.conftest import compose_cfg

    result = bench(compose_cfg("bench", [*TINY_BENCH, f"out_dir={tmp_path}", "bench.rounds=3", "bench.eager_batch_size=2"]))
    rounds = result["rounds"]
    assert len(rounds) == 3
    for r in rounds:  # each round's ratio in pairs/s: 4 pairs a step optimized, 2 plain
        assert r["speedup"] == pytest.approx(4 / r["ms_per_step"] / (2 / r["eager_ms_per_step"]), rel=1e-2)
    # every top-level figure is the median round's, so they agree with each other
    assert result["ms_per_step"] == sorted(r["ms_per_step"] for r in rounds)[1]
    assert result["eager_ms_per_step"] == sorted(r["eager_ms_per_step"] for r in rounds)[1]
    assert result["pairs_per_s"] == pytest.approx(4000 / result["ms_per_step"], rel=1e-2)
    assert result["speedup"] == pytest.approx(result["pairs_per_s"] / result["eager_pairs_per_s"], abs=0.02)
    ratios = sorted(r["speedup"] for r in rounds)
    assert result["speedup_range"] == [pytest.approx(ratios[0], abs=0.01), pytest.approx(ratios[2], abs=0.01)]


def test_bench_compares_a_larger_batch_with_the_reference_batch_in_pairs_per_second(tmp_path):
    from tests.conftest import compose_cfg

    tiny = [*TINY_BENCH, f"out_dir={tmp_path}"]
    result = bench(compose_cfg("bench", tiny + ["bench.eager_batch_size=2"]))
    assert result["eager_batch_size"] == 2 and result["settings"]["batch_size"] == 4
    # pairs/s of each at its own batch: 2 pairs per eager step, 4 per optimized step
    assert result["eager_pairs_per_s"] == pytest.approx(2000 / result["eager_ms_per_step"], rel=0.01)
    assert abs(result["speedup"] - result["pairs_per_s"] / result["eager_pairs_per_s"]) < 0.02
    # the agreement still compares identical steps at the optimized batch
    assert result["rel_loss_diff_optimized_vs_eager_same_dtype"]["max_2_steps"] < 1e-3
    with pytest.raises(ValueError, match="bench.eager_batch_size=8 is larger than train.batch_size=4"):
        bench(compose_cfg("bench", tiny + ["bench.eager_batch_size=8"]))


def test_instance_norm_is_torchs_and_keeps_the_layout():
    # torch's InstanceNorm2d (a batch norm over an (1, N*C, H, W) view) returned NCHW whatever it was given (torch
    # 2.11-2.14): in a channels-last network each normalised activation was copied back to NHWC (experiments/bench)
    torch.manual_seed(0)
    x = (torch.randn(3, 8, 6, 10) * 3 + 1).to(memory_format=torch.channels_last).requires_grad_()
    ref = torch.nn.InstanceNorm2d(8)
    g = torch.randn(3, 8, 6, 10)
    (grad_ref,) = torch.autograd.grad((ref(x) * g).sum(), x)
    out = instance_norm(x)
    (grad_ours,) = torch.autograd.grad((out * g).sum(), x)
    assert torch.allclose(out, ref(x), atol=1e-5) and torch.allclose(grad_ours, grad_ref, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # statistics in fp32, the activation in the autocast dtype
        low = instance_norm(x.bfloat16())
    assert low.dtype == torch.bfloat16 and torch.allclose(low.float(), ref(x), atol=0.05)
    assert torch.equal(InstanceNorm(8)(x), ref(x))  # eager: torch's own kernel
    assert not list(InstanceNorm(8).state_dict())  # checkpoints of nn.InstanceNorm2d generators load unchanged


def test_compiled_instance_norm_is_the_layout_keeping_form():
    graphs = []

    def keep(gm, example_inputs):  # a torch.compile backend that records what dynamo traced, then runs it as is
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    x = torch.randn(2, 4, 5, 5)
    out = torch.compile(InstanceNorm(4), backend=keep)(x)
    traced = str(graphs[0].graph)
    assert "var_mean" in traced and "instance_norm" not in traced and torch.allclose(out, InstanceNorm(4)(x), atol=1e-5)


def test_reflection_pad_is_torchs_and_keeps_the_layout():
    # torch's pad returns NCHW: compiled, the step saved that copy for the next convolution's backward
    x = torch.randn(2, 6, 5, 7)
    pad, ref = ReflectionPad(2), torch.nn.ReflectionPad2d(2)
    last = pad(x.to(memory_format=torch.channels_last))
    assert torch.equal(last, ref(x)) and last.is_contiguous(memory_format=torch.channels_last)
    assert pad(x).is_contiguous() and torch.equal(pad(x), ref(x))  # an NCHW network stays NCHW


def test_the_plain_reference_step_runs_torchs_own_layers():
    # lcgan.bench's eager reference is the reference CycleGAN: torch's InstanceNorm2d and ReflectionPad2d
    torch.manual_seed(0)
    g = ResnetGenerator(4, ngf=8, n_blocks=2, n_downsampling=1, output="tanh", anchor="identity")
    plain = torch_layers(copy.deepcopy(g))
    kinds = {type(m) for m in plain.modules()}
    assert torch.nn.InstanceNorm2d in kinds and torch.nn.ReflectionPad2d in kinds
    assert not kinds & {InstanceNorm, ReflectionPad} and {InstanceNorm, ReflectionPad} <= {type(m) for m in g.modules()}
    z = torch.randn(2, 4, 16, 16)
    assert torch.allclose(plain(z), g(z), atol=1e-5)


def test_r1_penalty_is_the_squared_input_gradient_of_d_on_reals():
    gan = _gan().eval()  # eval: spectral norm's power iteration does not move between the calls compared
    opt = torch.optim.Adam(gan.parameters())
    make = lambda gamma: CycleGANStep(gan, opt, opt, LossWeights(), FakeBuffer(0), FakeBuffer(0), None,  # noqa: E731
                                      torch.amp.GradScaler("cpu", enabled=False), r1_gamma=gamma)
    a, b = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    p1, p10 = make(1.0).r1_penalty(a, b), make(10.0).r1_penalty(a, b)
    assert p1.item() > 0 and torch.allclose(p10, 10 * p1, rtol=1e-4)
    assert not a.requires_grad and not b.requires_grad, "the penalty differentiates a copy, never the batch itself"
    # by hand: gamma/2 * (E|grad D_A(a)|^2 + E|grad D_B(b)|^2)
    by_hand = 0.0
    for d, real in ((gan.d_a, a), (gan.d_b, b)):
        x = real.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(d(x).sum(), x)
        by_hand = by_hand + g.pow(2).flatten(1).sum(1).mean()
    assert torch.allclose(make(2.0).r1_penalty(a, b), by_hand, rtol=1e-4)


@pytest.mark.slow
def test_training_with_r1_flattens_d_on_reals(tiny_cfg, tmp_path):
    # the penalty's effect through train's config: D_A's input gradient on real A latents ends smaller
    # (8 steps at lr 1e-3: 0.62x measured; at the default 2e-4 Adam moves D too little to tell, 0.92x)
    from hydra.utils import instantiate

    from lcgan import checkpoint
    from lcgan.build import build_gan
    from lcgan.train import train

    grad_sq = {}
    for gamma in (0, 100):
        out = tmp_path / f"r1_{gamma}"
        train(tiny_cfg(f"train.r1_gamma={gamma}", "train.r1_every=1", "train.epochs=2", "train.vis_every=0", "optim.lr=1e-3", out=out))
        cfg = tiny_cfg()
        gan = build_gan(cfg.model, 4)
        gan.d_a.load_state_dict(checkpoint.load(out / "model" / "last.pt")["D_A"])
        x = instantiate(cfg.data).a.requires_grad_(True)  # the run's real A latents (same seed)
        (g,) = torch.autograd.grad(gan.d_a.eval()(x).sum(), x)
        grad_sq[gamma] = g.pow(2).flatten(1).sum(1).mean().item()
    assert grad_sq[100] < 0.8 * grad_sq[0]


def test_d_lr_scale_gives_the_discriminators_their_own_rate_on_the_same_schedule(tiny_cfg):
    # TTUR: D at optim.lr * train.d_lr_scale, G at optim.lr, both decaying by the same factor
    from lcgan.build import build_gan, build_training

    cfg = tiny_cfg("train.d_lr_scale=4", "optim.lr=1e-4", "train.epochs=4", "optim.lr_constant_epochs=1", "optim.lr_decay_epochs=3")
    training = build_training(cfg, build_gan(cfg.model, 4), torch.device("cpu"), compile=False)
    rates = lambda: ([g["lr"] for g in training.step.opt_g.param_groups], [g["lr"] for g in training.step.opt_d.param_groups])  # noqa: E731
    g_lr, d_lr = rates()
    assert g_lr == [pytest.approx(1e-4)] * len(g_lr) and d_lr == [pytest.approx(4e-4)] * len(d_lr)
    for sched in (training.sched_g, training.sched_d):
        sched.step(), sched.step()  # two epochs on, the second decaying: 1 - 2/4
    g_lr, d_lr = rates()
    assert g_lr[0] == pytest.approx(0.5e-4) and d_lr[0] == pytest.approx(2e-4)


def test_ema_update_is_a_lerp_of_every_float_tensor():
    from lcgan.state import Ema

    net = ResnetGenerator(4, ngf=8, n_blocks=1, n_downsampling=1, output="residual", anchor="moment_match")
    ema = Ema(net, decay=0.9)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for t in (*net.parameters(), *net.buffers()):
            t.add_(1.0)
    ema.update(net)
    for k, v in ema.module.state_dict().items():
        assert torch.allclose(v, 0.9 * before[k] + 0.1 * (before[k] + 1.0), atol=1e-6), k


def test_ema_debias_keeps_no_share_of_the_start():
    from lcgan.state import Ema

    net = ResnetGenerator(4, ngf=8, n_blocks=1, n_downsampling=1, output="residual", anchor="moment_match")
    start = [t.clone() for t in net.parameters()]
    debiased, plain = Ema(net, decay=0.9, debias=True), Ema(net, decay=0.9)
    trained = []
    for step in range(5):  # G moves to start + step + 1 at each update
        with torch.no_grad():
            for t in net.parameters():
                t.add_(1.0)
        trained.append(step + 1.0)
        debiased.update(net, step)
        plain.update(net, step)
    weights = torch.tensor([0.9 ** (4 - s) for s in range(5)])
    mean = float((weights * torch.tensor(trained)).sum() / weights.sum())  # the decay-weighted mean of trained weights only
    share = 0.9 ** 5  # what the plain EMA keeps of the start
    for s0, d, p in zip(start, debiased.module.parameters(), plain.module.parameters()):
        assert torch.allclose(d, s0 + mean, atol=1e-5)
        assert torch.allclose(p, s0 + (1 - share) * mean, atol=1e-5)


def test_anchor_loss_is_the_l1_of_each_generators_correction():
    from lcgan.baselines import LinearMap

    gan = _gan()
    w = torch.eye(4).view(4, 4, 1, 1) * 0.5
    for g, shift in ((gan.g_ab, 0.3), (gan.g_ba, -0.2)):
        g.anchor = "gaussian_ot"
        g.set_anchor(LinearMap(w.clone(), torch.full((4,), shift)))
        torch.nn.init.normal_(g.net[-1].weight, std=0.05)  # a correction that is not zero
    a, b = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    losses, fake_a, fake_b = gan.generator_losses(a, b, LossWeights(lambda_anchor=2.0))
    expected = 2.0 * ((fake_b - (a * 0.5 + 0.3)).abs().mean() + (fake_a - (b * 0.5 - 0.2)).abs().mean())
    torch.testing.assert_close(losses["loss_anchor"].detach(), expected)
    assert expected > 0
    assert gan.generator_losses(a, b, LossWeights())[0]["loss_anchor"] == 0


def test_anchor_loss_keeps_the_generators_nearer_their_start():
    moved = {}
    for weight in (0.0, 50.0):
        gan = _gan()
        opt_g = torch.optim.Adam(list(gan.g_ab.parameters()) + list(gan.g_ba.parameters()), lr=1e-3)
        opt_d = torch.optim.Adam(list(gan.d_a.parameters()) + list(gan.d_b.parameters()), lr=1e-3)
        step = CycleGANStep(gan, opt_g, opt_d, LossWeights(lambda_anchor=weight), FakeBuffer(4), FakeBuffer(4), None,
                            torch.amp.GradScaler("cpu", enabled=False))
        torch.manual_seed(1)
        for _ in range(30):
            step(torch.randn(4, 4, 16, 16) * 0.4, torch.randn(4, 4, 16, 16) * 0.4 + 0.5)
        z = torch.randn(8, 4, 16, 16) * 0.4
        with torch.no_grad():
            moved[weight] = (gan.g_ab(z) - gan.g_ab.base(z)).abs().mean().item()
    assert moved[50.0] < 0.5 * moved[0.0], moved


def test_a_run_logs_the_anchor_loss(tiny_cfg, tmp_path):
    import json

    from lcgan.train import train

    train(tiny_cfg("train.lambda_anchor=1", "train.epochs=1", "train.vis_every=0"))
    [line] = [json.loads(x) for x in (tmp_path / "run" / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert line["loss_anchor"] > 0  # the generators moved off their start, and the run says by how much


def test_anchor_loss_on_a_tanh_generator_is_refused_naming_the_settings(tiny_cfg, tmp_path):
    from lcgan.config import ConfigError
    from lcgan.train import train

    with pytest.raises(ConfigError, match=r"train.lambda_anchor.*model.generator.output=residual"):
        train(tiny_cfg("train.lambda_anchor=1", "model.generator.output=tanh", "model.generator.anchor=identity", "train.epochs=1"))
    assert not (tmp_path / "run" / "model" / "last.pt").exists()
