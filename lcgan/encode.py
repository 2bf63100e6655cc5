"""Encode a folder of images into a folder of latents: one ``.pt`` per image, and a manifest.

    python -m lcgan.encode vae=sd15 input_dir=photos output_dir=latents/photos image_size=256
    python -m lcgan.encode vae=vaelight vae.encoder_path=E vae.decoder_path=D input_dir=... output_dir=...

``a/b/x.jpg`` becomes ``output_dir/a/b/x.pt``: a float32 ``(C, h, w)`` tensor in file space
(:mod:`lcgan.latents`). Existing outputs are kept, so an interrupted run resumes. Unreadable
images are skipped and listed (``on_error=skip``). ``manifest.json`` records the VAE, the latent
space, the storage convention and per-channel statistics; training calls :func:`check_manifests`
so that domains A and B, and the training config, agree on what their latents mean.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from lcgan import CONF_DIR, checkpoint, config
from lcgan.devices import resolve_device
from lcgan.images import IMAGE_SUFFIXES, list_images, read_batch
from lcgan.latent_files import MANIFEST, MANIFEST_VERSION, LatentStats, check_manifests, load_latent_file, read_manifest
from lcgan.latents import Convention
from lcgan.vae import VAE

log = logging.getLogger(__name__)


def plan_outputs(images: list[Path], input_dir: Path, output_dir: Path, flip_copies: bool) -> list[tuple[Path, list[Path]]]:
    """(image, [its output .pt, and its _flip.pt if asked]) for every image; refuses name collisions."""
    plan, owner = [], {}
    for image in images:
        out = output_dir / image.relative_to(input_dir).with_suffix(".pt")
        outs = [out, out.with_name(out.stem + "_flip.pt")] if flip_copies else [out]
        for o in outs:
            if o in owner:
                raise ValueError(f"{owner[o]} and {image} would both be written to {o}; rename one of them")
            owner[o] = image
        plan.append((image, outs))
    return plan


def encode(cfg: DictConfig) -> dict:
    """Encode ``cfg.input_dir`` into ``cfg.output_dir``; returns counts, failures and the manifest path."""
    config.check(cfg)
    input_dir, output_dir = Path(cfg.input_dir), Path(cfg.output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input_dir={str(input_dir)!r} is not a folder of images")
    device = resolve_device(cfg.device)
    vae_kwargs = {"device": str(device)}
    if "sample_posterior" in cfg.vae:  # one switch for encoding: encode.sample_posterior
        vae_kwargs["sample_posterior"] = cfg.sample_posterior
    elif cfg.sample_posterior:
        raise ValueError(f"sample_posterior=true needs a VAE with a posterior (vae=sd15 and friends), not {cfg.vae._target_}")
    torch.manual_seed(cfg.seed)
    vae: VAE = instantiate(cfg.vae, **vae_kwargs)
    space, convention = vae.space, Convention(latents_scaled=cfg.latents_scaled)
    if cfg.image_size % space.downsample:
        raise ValueError(f"image_size={cfg.image_size} must be a multiple of the VAE's downsampling factor {space.downsample}")

    manifest_base = {
        "lcgan_manifest": MANIFEST_VERSION,
        "source_dir": str(input_dir.resolve()),
        "vae": vae.describe(),
        "latent_space": space.as_dict(),
        "latents_scaled": bool(cfg.latents_scaled),
        "image_size": int(cfg.image_size),
        "latent_shape": [space.channels, cfg.image_size // space.downsample, cfg.image_size // space.downsample],
        "flip_copies": bool(cfg.flip_copies),
        "sample_posterior": bool(cfg.sample_posterior),
    }
    previous = read_manifest(output_dir)
    if previous is not None and not cfg.overwrite:  # resuming must not mix two kinds of latents in one folder
        check_manifests(previous, {**manifest_base, "dir": str(output_dir)}, latents_scaled=bool(cfg.latents_scaled))

    plan = plan_outputs(list_images(input_dir), input_dir, output_dir, cfg.flip_copies)
    if not plan:
        raise ValueError(f"input_dir={str(input_dir)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}, searched recursively); "
                         "nothing to encode")
    todo = [(img, outs) for img, outs in plan if cfg.overwrite or not all(o.exists() for o in outs)]
    log.info(f"encode: {len(plan)} images in {input_dir}, {len(todo)} to encode -> {output_dir} | vae {vae.describe()} | "
             f"image_size {cfg.image_size} -> latents {manifest_base['latent_shape']} | latents_scaled "
             f"{cfg.latents_scaled} | device {device} | batch {cfg.batch_size}")

    failed, written = [], 0
    batches = [todo[i : i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
    with ThreadPoolExecutor(max_workers=1) as prefetch, tqdm(total=len(todo), desc="encode", unit="img") as bar:
        read = lambda batch: read_batch([img for img, _ in batch], cfg.image_size, cfg.num_workers)  # noqa: E731
        pending = prefetch.submit(read, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            x, ok_paths, errors = pending.result()
            pending = prefetch.submit(read, batches[i + 1]) if i + 1 < len(batches) else None  # read while encoding
            if errors and cfg.on_error == "stop":
                raise ValueError(f"{errors[0][1]} (on_error=stop; use on_error=skip to skip unreadable images)")
            failed += [{"path": str(p.relative_to(input_dir)), "error": e} for p, e in errors]
            if x is not None:
                if cfg.flip_copies:  # flip the pixels, not the latents: the VAE is not exactly flip-equivariant
                    x = torch.cat([x, x.flip(-1)])
                z = convention.raw_to_file(vae.encode(x), space).float().cpu()  # (B or 2B, C, h, w), file space
                outs = {img: outs for img, outs in batch}
                for j, img in enumerate(ok_paths):
                    for k, out in enumerate(outs[img]):
                        out.parent.mkdir(parents=True, exist_ok=True)
                        checkpoint.save(z[j + k * len(ok_paths)].clone(), out)  # clone: save this latent only, not the batch
                        written += 1
            bar.update(len(batch))

    # statistics of everything the folder now holds for these images, earlier runs included
    stats_file, stats_raw = LatentStats(), LatentStats()
    outputs = [o for _, outs in plan for o in outs if o.exists()]
    for out in outputs:
        z = load_latent_file(out)
        stats_file.update(z)
        stats_raw.update(convention.file_to_raw(z, space))
    manifest = {
        **manifest_base,
        "count": sum(outs[0].exists() for _, outs in plan),  # images with a latent
        "files": len(outputs),  # .pt files, flips included
        "written_last_run": written,
        "skipped_existing": len(plan) - len(todo),
        "failed": failed,
        "stats_raw": {k: v for k, v in stats_raw.result().items() if k in ("mean", "std")},
        "stats_file": {k: v for k, v in stats_file.result().items() if k in ("mean", "std", "abs_p99.9", "suggested_divisor")},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_bytes(output_dir / MANIFEST, json.dumps(manifest, indent=2).encode())
    if failed:
        log.warning(f"{len(failed)} unreadable images skipped (listed in {output_dir / MANIFEST}):\n"
                    + "\n".join(f"  {f['error']}" for f in failed))
    log.info(f"wrote {written} latent files; {manifest['count']} images encoded in {output_dir}; {len(failed)} failed")
    if manifest["count"] == 0:
        raise ValueError(f"none of the {len(plan)} images in input_dir={str(input_dir)!r} could be encoded (reasons in "
                         f"{output_dir / MANIFEST}, e.g. {failed[0]['error'] if failed else '?'})")
    return {"written": written, "skipped_existing": manifest["skipped_existing"], "failed": failed,
            "manifest": str(output_dir / MANIFEST)}


@hydra.main(config_path=CONF_DIR, config_name="encode", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with config.user_errors():  # a bad setting: one line, no traceback
        encode(cfg)


if __name__ == "__main__":
    main()
