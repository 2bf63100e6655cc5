"""Does the decoded log spectrum identify a *restricted* map? A closed-form-style probe for issue 12, no GAN.

The log spectrum of decoded images (``lcgan.spectrum``) moves with blur and sharpening far more than with photo
content, yet as a loss on a ResNet generator it lost (README, "Training quality"): many latent maps give B's
spectrum. Here the map may only be a small linear spatial filter on the latents, ``z + conv3x3(z) + bias``
(148 parameters, started at the identity, its kernel kept symmetric: zero phase), fitted without pairs by the spectrum of its decoded 128 px windows
against B's whole domain. Scored like every row of the suite: PSNR of the decoded translation of the held-out
test crops against the transformed truth, next to identity and the unpaired closed-form maps.

    python experiments/known_transform/run.py --transform soft_focus --no-train --image-size 256 --lpips off --out OUT
    python experiments/known_transform/spectral_filter.py --transform soft_focus --out OUT   # the same OUT (its data)
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from run import data_folder, load_folder, load_vae, probe_parser, score_latents, with_truth

from lcgan.baselines import BASELINES, fit
from lcgan.spectrum import domain_spectrum, spectrum_loss
from lcgan.vae import OnnxVAE

WINDOW = 16  # latent cells decoded per window: 128 px, as train.d_crop=16


def windows(z: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random WINDOW x WINDOW latent windows of random latents of ``z``."""
    idx = torch.randint(0, len(z), (n,), generator=gen)
    i, j = (torch.randint(0, z.shape[-1] - WINDOW + 1, (1,), generator=gen).item() for _ in range(2))
    return z[idx, :, i:i + WINDOW, j:j + WINDOW]


def main() -> None:
    ap = probe_parser(__doc__, None)
    ap.add_argument("--transform", default="soft_focus")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--score-every", type=int, default=50, help="also score the test crops every N steps")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    data = data_folder(args.out, args.image_size)
    scorer = load_vae(args.shared)  # onnxruntime: fast, no gradients
    w = args.shared / "weights" / "vaelight"
    vae = OnnxVAE(encoder_path=str(w / "VAEencoder.onnx"), decoder_path=str(w / "VAEpreview.onnx"), channels=4,
                  sum_decoder_outputs=True, backend="torch")  # the decoder as torch ops: gradients to the map
    a, groups_a = load_folder(data / "a")
    b, groups_b = load_folder(data / args.transform / "b")
    test = with_truth(scorer, torch.load(data / "test.pt", weights_only=True), args.transform)
    centre = lambda z: vae.decode(z[..., 8:8 + WINDOW, 8:8 + WINDOW])  # noqa: E731
    target = domain_spectrum(centre, b)
    conv = torch.nn.Conv2d(4, 4, 3)  # its weights; applied by mapped() below
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(conv.bias)
    opt = torch.optim.Adam(conv.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    def mapped(z: torch.Tensor) -> torch.Tensor:
        # zero-phase: the kernel averaged with its 180-degree rotation. The spectrum cannot see a shift (phase),
        # and a shifted image loses every pixel comparison; blur and unsharp masks are symmetric
        kernel = (conv.weight + conv.weight.flip(-1, -2)) / 2
        return z + F.conv2d(F.pad(z, (1, 1, 1, 1), mode="replicate"), kernel, conv.bias)

    for step in range(args.steps):
        z = windows(a, args.batch, gen)
        loss = spectrum_loss(vae.decode_with_grad(mapped(z)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % args.score_every == 0 and step + 1 < args.steps:
            with torch.no_grad():
                print(f"step {step + 1} loss {loss.item():.4f} ({time.time() - t0:.0f} s): "
                      f"PSNR {score_latents(scorer, test, mapped(test['z_x']))[0]:.2f} dB", flush=True)
    rows = {"identity": test["z_x"], **{kind: fit(kind, a, b, groups_a, groups_b)(test["z_x"]) for kind in BASELINES}}
    with torch.no_grad():
        rows["spectral_filter"] = mapped(test["z_x"])
    rows["oracle"] = test["z_y"]
    # how close each row's decoded spectrum is to B's training domain (whole images): what the fit minimised
    whole_b = domain_spectrum(scorer.decode, b)
    print(f"{args.transform}, seed {args.seed}, {args.steps} steps of {args.batch} windows, lr {args.lr}, test crops:")
    print("| map | PSNR dB | spectrum distance to B |\n| --- | --- | --- |")
    for name, z in rows.items():
        dist = (domain_spectrum(scorer.decode, z) - whole_b).pow(2).mean().item()
        print(f"| {name} | {score_latents(scorer, test, z)[0]:.2f} | {dist:.3f} |")


if __name__ == "__main__":
    main()
