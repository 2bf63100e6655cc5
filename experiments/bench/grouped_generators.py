"""Horizontal fusion of G and F, measured: both generators as one grouped pass vs two, forward and backward. CUDA.

The optimized step runs G and F one after the other; at the reference setting (resnet9, batch 64, 32x32 latents)
their convolutions are small (8x8 maps at 256 channels), and one pass of both would give cuDNN twice the work per
kernel. Here G's and F's channels are stacked and every convolution is grouped (``groups=2``, weights concatenated):
InstanceNorm, ReLU, padding and the residual sums are per channel, so the math is the two generators' (checked in
fp32 against the two separate passes). Each variant's forward and backward (bf16 autocast, channels-last, cuDNN
autotuner) is captured in one CUDA graph and replayed 200 times; eager twice each, taking turns, then compiled
(``torch.compile``, default mode) once each. Prints one JSON line a setting and the whole result last.

    python experiments/bench/grouped_generators.py      # results: grouped_generators.md
"""
import json
import time

import torch
import torch.nn.functional as Fn
from torch import nn

from lcgan.models import ResnetBlock, ResnetGenerator


def paired(g, f, xg, xf):
    """G(xg) and F(xf) in one pass: channels stacked, every conv grouped (groups=2); norms, pads, ReLUs are per channel."""
    x = torch.cat([xg, xf], dim=1)

    def run(mods_g, mods_f, x):
        for mg, mf in zip(mods_g, mods_f):
            if isinstance(mg, ResnetBlock):
                x = x + run(mg.body, mf.body, x)
            elif isinstance(mg, nn.ConvTranspose2d):
                w = torch.cat([mg.weight, mf.weight])  # (in, out/g, k, k): stacked along in
                x = Fn.conv_transpose2d(x, w, torch.cat([mg.bias, mf.bias]), mg.stride, mg.padding, mg.output_padding, groups=2)
            elif isinstance(mg, nn.Conv2d):
                x = Fn.conv2d(x, torch.cat([mg.weight, mf.weight]), torch.cat([mg.bias, mf.bias]), mg.stride, mg.padding, groups=2)
            else:
                x = mg(x)
        return x
    out = run(g.net, f.net, x)
    return out.chunk(2, dim=1)


def separate(g, f, xg, xf):
    return g.net(xg), f.net(xf)


def replay_ms(forward, g, f, xs, compiled: bool, n: int = 200) -> float:
    """Milliseconds per forward and backward of ``forward(g, f, *xs)`` (bf16), replayed as one CUDA graph."""
    params = [*g.parameters(), *f.parameters()]

    def loss_fn(xg, xf):
        with torch.autocast("cuda", torch.bfloat16):
            a, b = forward(g, f, xg, xf)
        return a.float().square().mean() + b.float().square().mean()

    loss_fn = torch.compile(loss_fn) if compiled else loss_fn

    def step():
        return torch.autograd.grad(loss_fn(*xs), params)

    for _ in range(15):  # compile, autotune
        step()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up on a side stream before capture, as torch's docs ask
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for _ in range(10):
        graph.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        graph.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e3


def main():
    torch.backends.cudnn.benchmark = True
    dev = "cuda"
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": []}
    # the step's two stages: G and F on stacked translation + identity inputs (2 x 64), then on each other's fakes (64)
    for batch, compiled in ((128, False), (64, False), (128, True), (64, True)):
        torch.manual_seed(0)
        g, f = (ResnetGenerator(4, 64, 9, 2, output="tanh", anchor="identity").to(dev).to(memory_format=torch.channels_last)
                for _ in range(2))
        for m in (g, f):  # the last layers are not zero here, so the outputs can be compared
            nn.init.normal_(m.net[-1].weight, std=0.02)
        xs = [torch.randn(batch, 4, 32, 32, device=dev).contiguous(memory_format=torch.channels_last) for _ in range(2)]
        with torch.no_grad(), torch.backends.cudnn.flags(allow_tf32=False):
            err = max((u - v).abs().max().item() for u, v in zip(separate(g, f, *xs), paired(g, f, *xs)))
        row = {"batch": batch, "latent": "4x32x32", "compiled": compiled, "max_abs_diff_fp32": err, "separate_ms": [], "grouped_ms": []}
        for _ in range(1 if compiled else 2):
            for name, forward in (("separate_ms", separate), ("grouped_ms", paired)):
                row[name].append(replay_ms(forward, g, f, xs, compiled))
        print(json.dumps(row), flush=True)
        res["rows"].append(row)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
