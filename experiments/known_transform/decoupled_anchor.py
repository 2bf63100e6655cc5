"""What ``train.post_filter``'s start is worth before any training: the anchor decoupled from the filters, then a filter.

``lcgan.postfilter.setup`` is the code the training runs: from the training latents it fits a first 9x9 pixel filter
each way on the untranslated decodes (128 px centre crops) and the anchor map (default: the shrunk Gaussian-OT map)
from the decoupled latents ``z + encode(h * decode(z)) - encode(decode(z))``. Rows, scored like every row of the
suite (PSNR of the test crops' decoded translation against the truth): identity; the anchor fitted as usual; the
decoupled anchor alone, followed by the first filter (where training starts), and followed by a filter refitted on
its own decodes (where a filter that only tracked it would go). The trained ``train.post_filter=9`` rows of
``results/suite_256px.md`` minus these is what training G adds.

    python experiments/known_transform/run.py --transform grade --no-train --image-size 256 --lpips off --out OUT
    python experiments/known_transform/decoupled_anchor.py --transforms grade,soft_focus --out OUT   # the same OUT
"""
from __future__ import annotations

import time

import torch
from run import data_folder, load_folder, load_vae, probe_parser, score_filtered, score_latents, with_truth

from lcgan.baselines import fit
from lcgan.cyclegan import Decoded
from lcgan.latents import Convention
from lcgan.postfilter import fit_filter, setup


def main() -> None:
    ap = probe_parser(__doc__, "grade,soft_focus")
    ap.add_argument("--anchor", default="gaussian_ot_shrunk")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop", type=int, default=16, help="latent cells of the centre crop the filters and spectra see "
                    "(train.d_crop: 16 = 128 px; 0: the whole image)")
    ap.add_argument("--decouple", choices=("difference", "round_trip"), default="difference",
                    help="difference: z + encode(h x) - encode(x) fitted to B (what lcgan.postfilter.setup does); "
                         "round_trip: encode(h x) fitted to encode(decode(b)), both sides through the VAE (run.py's rows; "
                         "train.post_filter_decouple)")
    ap.add_argument("--colour", default="none", help="train.post_colour: a gated pixel colour map before each filter")
    ap.add_argument("--colour-alpha", type=float, default=0.05, help="train.post_colour_alpha")
    args = ap.parse_args()
    data = data_folder(args.out, args.image_size)
    vae = load_vae(args.shared)
    view = Decoded(vae, Convention(latent_divisor=1.0), crop=args.crop)  # model space = raw latents: the maps are affine, the scale cancels
    a, groups_a = load_folder(data / "a")
    print(f"anchor {args.anchor}, 9x9 filters, crop {args.crop}, decoupled by {args.decouple}, colour {args.colour}, seed {args.seed}; "
          "PSNR dB on the test crops")
    print("| transform | identity | anchor | decoupled anchor | + first filter (training starts here) | + filter refitted on it |")
    print("| --- | --- | --- | --- | --- | --- |")
    for transform in args.transforms.split(","):
        t0 = time.time()
        b, groups_b = load_folder(data / transform / "b")
        test = with_truth(vae, torch.load(data / "test.pt", weights_only=True), transform)
        trainer, anchors = setup(9, 0.01, view, a, b, groups_a, groups_b, args.anchor, args.seed, args.decouple, args.colour,
                                 args.colour_alpha)
        plain, free = fit(args.anchor, a, b, groups_a, groups_b), anchors["A2B"]
        z = free(test["z_x"])
        with torch.no_grad():
            images = torch.cat([view.centre(c) for c in free(a).split(16)])
        refit = fit_filter(trainer.filters.g_ab.recolour(images), trainer.spec_b, 9, seed=args.seed)
        refit.load_state_dict({**refit.state_dict(), "colour": trainer.filters.g_ab.colour})  # the same colour map before it
        score = lambda z, test=test: score_latents(vae, test, z)[0]  # noqa: E731
        print(f"| {transform} | {score(test['z_x']):.2f} | {score(plain(test['z_x'])):.2f} | {score(z):.2f} "
              f"| {score_filtered(vae, trainer.filters.g_ab, test, z)[0]:.2f} | {score_filtered(vae, refit, test, z)[0]:.2f} |"
              f"  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
