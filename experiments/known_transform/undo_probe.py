"""How well ``train.d_targets=unfiltered`` undoes the post-stage: measured with pairs, on the test photos.

The latent discriminators of the suite preset take as real each domain with the post-stage into it undone (G's
stage for B: its colour map and 9x9 filter, fitted at the start by ``lcgan.postfilter.setup``). A poor undo
leaves B's targets still partly transformed, and the discriminators then ask G to transform a second time.
Here the test photos' transformed truth ``z_y`` is undone in several ways, and each result is decoded and
compared with the decode of the untransformed photo ``z_x`` (PSNR, dB; the higher, the closer to A's own):

- ``none``: ``z_y`` as it is (the undo's floor);
- ``first_order``: ``z_y - (encode(h_ab x) - encode(x))``, ``x = decode(z_y)``: the filter and colour map undone to
  first order (``pfTcU``);
- ``unfiltered``: ``lcgan.postfilter.unfiltered`` as it is now (the colour map undone by the other direction's,
  the filter to first order: ``pfTcUx``, the preset);
- ``other_stage``: ``z_y + encode(g_ba x) - encode(x)``: the whole stage undone by the other direction's (its colour
  map and filter, fitted from B's decodes to A's spectrum and colours).

    python experiments/known_transform/run.py --transform soft_focus --no-train --image-size 256 --lpips off --out OUT
    python experiments/known_transform/undo_probe.py --transforms soft_focus,sharpen --out OUT   # the same OUT
"""
from __future__ import annotations

import time

import torch
from run import data_folder, decode, load_folder, load_vae, probe_parser, psnr, with_truth

from lcgan.cyclegan import Decoded
from lcgan.latents import Convention
from lcgan.postfilter import round_trips, setup, unfiltered


def main() -> None:
    ap = probe_parser(__doc__, "soft_focus,sharpen,grade")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--colour", default="gaussian_ot", help="train.post_colour (the preset's)")
    args = ap.parse_args()
    data = data_folder(args.out, args.image_size)
    vae = load_vae(args.shared)
    view = Decoded(vae, Convention(latent_divisor=1.0), crop=16)  # as decoupled_anchor.py: model space = raw latents
    a, groups_a = load_folder(data / "a")
    print(f"9x9 filters, colour {args.colour}, seed {args.seed}; PSNR dB of each undo's decode against decode(z_x), test crops")
    print("| transform | colour maps | none | first_order | unfiltered (preset) | other_stage |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for transform in args.transforms.split(","):
        t0 = time.time()
        b, groups_b = load_folder(data / transform / "b")
        test = with_truth(vae, torch.load(data / "test.pt", weights_only=True), transform)
        trainer, _ = setup(9, 0.0, view, a, b, groups_a, groups_b, "identity", args.seed, colour=args.colour)
        filters = trainer.filters
        z_y, z_x = test["z_y"], test["z_x"]
        moved, plain, back = round_trips(z_y, [filters.g_ab, None, filters.g_ba], vae, view.convention)
        rows = {"none": z_y, "first_order": z_y - (moved - plain), "unfiltered": unfiltered(z_x, z_y, filters, view)[1],
                "other_stage": z_y + back - plain}
        ref = decode(vae, z_x)
        score = {k: psnr(decode(vae, z), ref).mean().item() for k, z in rows.items()}
        colours = "+".join(n for n, h in (("A->B", filters.g_ab), ("B->A", filters.g_ba)) if h.coloured) or "none"
        print(f"| {transform} | {colours} | " + " | ".join(f"{score[k]:.2f}" for k in rows) + f" |  ({time.time() - t0:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
