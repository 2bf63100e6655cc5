"""Autoencoders between RGB images and latents.

Every VAE here has the same small interface:

- ``space``: a :class:`lcgan.latents.LatentSpace` (channels, scaling and shift factors);
- ``encode(x)``: images ``(B, 3, H, W)`` in [-1, 1] -> raw latents ``(B, C, H/8, W/8)``;
- ``decode(z)``: raw latents -> images in [-1, 1], float32.

"Raw" is defined in :mod:`lcgan.latents`; backends whose native convention differs (TAESD works
on scaled latents and [0, 1] images) convert inside, so callers never see the difference.

Backends (one ``conf/vae/*.yaml`` each; ``device`` is passed by the caller):

- :class:`ApproxVAE` (``vae=approx``): no weights, a linear preview; smoke tests and pictures only.
- :class:`DiffusersVAE` (``vae=sd15``, ``sdxl``, ``flux``): a diffusers ``AutoencoderKL``.
- :class:`TinyVAE` (``vae=taesd``, ``taef2``): TAESD-family release files or ``AutoencoderTiny``.
- :class:`OnnxVAE` (``vae=onnx``, ``vaelight``): an encoder/decoder pair of ONNX files.
"""
from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from lcgan.devices import resolve_device
from lcgan.images import from_unit, to_unit
from lcgan.latents import SD_SCALING_FACTOR, LatentSpace

# The well-known linear latent -> RGB preview for SD1.x (as used by ComfyUI's previews),
# applied to *scaled* latents. Rows: latent channels; columns: R, G, B.
SD15_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)


class VAE:
    """Base class: a frozen autoencoder with a known latent space."""

    space: LatentSpace
    device: torch.device

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> images in [-1, 1], without gradients (pictures, evaluation)."""
        with torch.no_grad():
            return self.decode_with_grad(z)

    def decode_with_grad(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """The same decode, differentiable in ``z`` (the weights stay frozen): ``train.d_input=decoded``."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What a manifest or summary records about this VAE."""
        return {"class": type(self).__name__, **self.space.as_dict()}

    def networks(self) -> list[torch.nn.Module]:
        """The torch networks this VAE runs (none for onnxruntime or the linear preview)."""
        return [m for m in vars(self).values() if isinstance(m, torch.nn.Module)]

    def compile(self, backend: str = "inductor") -> None:
        """``torch.compile`` those networks in place (``eval.compile``): their norms and activations fuse. Shapes are
        static: each new batch shape compiles once more (the last, smaller batch of a folder too)."""
        for net in self.networks():
            net.compile(dynamic=False, backend=backend)


class ApproxVAE(VAE):
    """No weights: the linear latent-preview approximation of the SD1.x VAE.

    Good enough to see colours and layout of training pictures; decoded images are at latent
    resolution upsampled ``upscale`` times. ``encode`` is the least-squares inverse of the same
    map on ``upscale x upscale``-averaged pixels (so a round trip keeps the latent size), only meant for smoke tests.
    """

    def __init__(self, device: str = "cpu", upscale: int = 8) -> None:
        self.device = torch.device(device)
        self.space = LatentSpace(channels=4, scaling_factor=SD_SCALING_FACTOR)
        self.upscale = upscale
        self.rgb = torch.tensor(SD15_LATENT_RGB, dtype=torch.float32, device=self.device)  # (4, 3)

    def decode_with_grad(self, z: torch.Tensor) -> torch.Tensor:
        scaled = z.float().to(self.device) * self.space.scaling_factor
        x = torch.einsum("bchw,cr->brhw", scaled, self.rgb)
        if self.upscale > 1:
            x = F.interpolate(x, scale_factor=self.upscale, mode="bilinear", align_corners=False)
        return x.clamp(-1, 1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x.float().to(self.device), self.upscale)
        scaled = torch.einsum("brhw,rc->bchw", x, torch.linalg.pinv(self.rgb))
        return scaled / self.space.scaling_factor


# ---------------------------------------------------------------------------------------------
# Helpers shared by the real backends
# ---------------------------------------------------------------------------------------------

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# conf/vae/sd15.yaml's default; the original runwayml/stable-diffusion-v1-5 was withdrawn from the hub
SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# withdrawn hub ids (still named by old checkpoints and configs) -> the maintained mirror of the same weights
WITHDRAWN_HUB_IDS = {"runwayml/stable-diffusion-v1-5": SD15_HUB_ID}

def weights_hint(model_name_or_path: str, subfolder: str | None) -> str:
    """The ways to provide hub weights without network access at run time."""
    include = f" --include '{subfolder}/*'" if subfolder else ""
    return (
        "provide the weights in one of these ways: a local folder written by save_pretrained "
        "(vae.model_name_or_path=/path/to/folder, vae.subfolder=null if its config.json sits at the top); "
        "a Hugging Face cache that already holds the model (point HF_HOME at it); or download once on a "
        f"machine with internet: hf download {model_name_or_path}{include} --local-dir DIR "
        "(huggingface-cli download ... with huggingface_hub < 1.0), then vae.model_name_or_path=DIR"
    )


LOCAL_PATH_KEYS = ("encoder_path", "decoder_path", "cache_dir")  # always on this machine's disk


def absolute_paths(vae_cfg: dict) -> dict:
    """``vae_cfg`` (plain) with its file and folder settings absolute and resolved, so a checkpoint that
    records it loads the VAE from any working folder; ``model_name_or_path`` only when it exists here
    (else it is a hub id)."""
    def local(key: str, value) -> bool:
        return isinstance(value, str) and (key in LOCAL_PATH_KEYS or (key == "model_name_or_path" and os.path.exists(value)))

    return {k: str(Path(v).resolve()) if local(k, v) else v for k, v in vae_cfg.items()}


def _torch_dtype(dtype: str) -> torch.dtype:
    if dtype not in _DTYPES:
        raise ValueError(f"vae.dtype={dtype!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _import_diffusers():
    try:
        import diffusers
    except ImportError as e:
        raise ImportError("this VAE backend needs diffusers: pip install diffusers") from e
    return diffusers


def _from_pretrained(cls, model_name_or_path: str, subfolder: str | None, **kwargs):
    """``cls.from_pretrained`` with one clear error for every way the weights can be missing."""
    try:
        return cls.from_pretrained(model_name_or_path, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as e:  # hub, offline and path errors are all OSError/ValueError subclasses
        raise FileNotFoundError(
            f"could not load {cls.__name__} weights from vae.model_name_or_path={model_name_or_path!r} "
            f"vae.subfolder={subfolder!r}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
            + weights_hint(model_name_or_path, subfolder)
        ) from e


def _existing_file(path: str, key: str) -> str:
    """``path`` if it is a file, else a FileNotFoundError that names the config key to set."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vae.{key}={path!r} is not a file; set vae.{key}=/path/to/the/file")
    return path


# ---------------------------------------------------------------------------------------------
# diffusers AutoencoderKL: SD1.x (vae=sd15), SDXL, SD3, FLUX.1 (other YAMLs, same class)
# ---------------------------------------------------------------------------------------------


class DiffusersVAE(VAE):
    """A diffusers ``AutoencoderKL``, frozen; latent space read from the model's config."""

    def __init__(
        self,
        model_name_or_path: str = SD15_HUB_ID,
        subfolder: str | None = "vae",
        revision: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        dtype: str = "fp32",
        sample_posterior: bool = False,
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
        device: str = "cpu",
    ) -> None:
        diffusers = _import_diffusers()
        self.device = resolve_device(device)
        self.dtype = _torch_dtype(dtype)
        self.sample_posterior = sample_posterior
        if model_name_or_path in WITHDRAWN_HUB_IDS and not os.path.isdir(model_name_or_path):
            mirror = WITHDRAWN_HUB_IDS[model_name_or_path]
            warnings.warn(f"vae.model_name_or_path={model_name_or_path!r} was withdrawn from the hub; loading its mirror {mirror!r} "
                          f"(set vae.model_name_or_path={mirror} to silence this)", stacklevel=2)
            model_name_or_path = mirror
        self.source = {"model_name_or_path": model_name_or_path, "subfolder": subfolder, "revision": revision}
        vae = _from_pretrained(
            diffusers.AutoencoderKL, model_name_or_path, subfolder,
            revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, torch_dtype=self.dtype,
        )
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        config = self.vae.config
        sf = scaling_factor if scaling_factor is not None else config.scaling_factor
        shift = shift_factor if shift_factor is not None else (getattr(config, "shift_factor", None) or 0.0)
        self.space = LatentSpace(channels=int(config.latent_channels), scaling_factor=float(sf), shift_factor=float(shift),
                                 downsample=2 ** (len(config.block_out_channels) - 1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        posterior = self.vae.encode(x.to(self.device, self.dtype)).latent_dist
        z = posterior.sample() if self.sample_posterior else posterior.mean
        return z.float()

    def decode_with_grad(self, z: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode(z.to(self.device, self.dtype)).sample
        return x.float().clamp(-1, 1)

    def describe(self) -> dict:
        return {**super().describe(), **self.source, "dtype": str(self.dtype).removeprefix("torch."),
                "sample_posterior": self.sample_posterior}

    def compile(self, backend: str = "inductor") -> None:
        for net in (self.vae.encoder, self.vae.decoder):  # what AutoencoderKL.encode/decode call (its forward is unused)
            net.compile(dynamic=False, backend=backend)


# ---------------------------------------------------------------------------------------------
# Tiny autoencoders (TAESD family): release .pth files via lcgan.taesd, or diffusers AutoencoderTiny
# ---------------------------------------------------------------------------------------------


def _find_release_file(folder: str, part: str) -> str | None:
    """The one ``*_{part}.pth`` / ``.safetensors`` in ``folder``, None if there is none."""
    found = sorted(glob.glob(os.path.join(folder, f"*_{part}.pth")) + glob.glob(os.path.join(folder, f"*_{part}.safetensors")))
    if len(found) > 1:
        names = [os.path.basename(f) for f in found]
        raise ValueError(f"vae.model_name_or_path={folder!r} holds several {part} files {names}; pick one with vae.{part}_path=...")
    return found[0] if found else None


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


class TinyVAE(VAE):
    """A TAESD-family tiny autoencoder, converted to our convention (raw latents, [-1, 1] images).

    TAESD's native latents are ``(raw - shift_factor) * scaling_factor`` of the VAE it mimics, so
    ``scaling_factor``/``shift_factor`` here are that VAE's (0.18215/0 for SD1.x); they are NOT read
    from a diffusers config, whose ``scaling_factor`` is 1.0 for tiny autoencoders.
    Weights: ``encoder_path``/``decoder_path``, or a folder ``model_name_or_path`` holding the
    release files ``*_encoder.pth``/``*_decoder.pth``, or else a diffusers ``AutoencoderTiny``
    folder or hub id (e.g. madebyollin/taesd).
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        encoder_path: str | None = None,
        decoder_path: str | None = None,
        scaling_factor: float = SD_SCALING_FACTOR,
        shift_factor: float = 0.0,
        subfolder: str | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        dtype: str = "fp32",
        device: str = "cpu",
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = _torch_dtype(dtype)
        if model_name_or_path and os.path.isdir(model_name_or_path) and not (encoder_path or decoder_path):
            encoder_path = _find_release_file(model_name_or_path, "encoder")
            decoder_path = _find_release_file(model_name_or_path, "decoder")
        self.source: dict = {"model_name_or_path": model_name_or_path}
        if encoder_path or decoder_path:
            from lcgan import taesd

            if not (encoder_path and decoder_path):
                raise ValueError(f"vae.encoder_path={encoder_path!r} and vae.decoder_path={decoder_path!r}: set both")
            self.encoder = taesd.load(_load_state_dict(_existing_file(encoder_path, "encoder_path")), "encoder")
            self.decoder = taesd.load(_load_state_dict(_existing_file(decoder_path, "decoder_path")), "decoder")
            channels = self.encoder[-1].out_channels
            if self.decoder[1].in_channels != channels:
                raise ValueError(f"encoder ({channels} channels) and decoder ({self.decoder[1].in_channels}) "
                                 f"belong to different latent spaces: {encoder_path}, {decoder_path}")
            self.diffusers_model = None
            self.source.update(encoder_path=encoder_path, decoder_path=decoder_path)
        elif model_name_or_path:
            diffusers = _import_diffusers()
            ae = _from_pretrained(diffusers.AutoencoderTiny, model_name_or_path, subfolder, revision=revision,
                                  cache_dir=cache_dir, local_files_only=local_files_only)
            # diffusers' EncoderTiny/DecoderTiny already map [-1, 1] <-> [0, 1] inside
            self.encoder, self.decoder, self.diffusers_model = ae.encoder, ae.decoder, ae
            channels = int(ae.config.latent_channels)
            self.source.update(subfolder=subfolder, revision=revision)
        else:
            raise ValueError(
                "vae=taesd needs weights: set vae.model_name_or_path=<folder with *_encoder.pth/*_decoder.pth, "
                "or diffusers AutoencoderTiny folder/hub id> or vae.encoder_path=... vae.decoder_path=..."
            )
        self.encoder = self.encoder.to(self.device, self.dtype).eval().requires_grad_(False)
        self.decoder = self.decoder.to(self.device, self.dtype).eval().requires_grad_(False)
        self.space = LatentSpace(channels=channels, scaling_factor=float(scaling_factor), shift_factor=float(shift_factor))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        native = self.encoder(x) if self.diffusers_model is not None else self.encoder(to_unit(x))
        return native.float() / self.space.scaling_factor + self.space.shift_factor  # TAESD latents -> raw

    def decode_with_grad(self, z: torch.Tensor) -> torch.Tensor:
        native = (z.to(self.device).float() - self.space.shift_factor) * self.space.scaling_factor
        x = self.decoder(native.to(self.dtype)).float()
        if self.diffusers_model is None:
            x = from_unit(x)  # release decoders output [0, 1]
        return x.clamp(-1, 1)

    def describe(self) -> dict:
        return {**super().describe(), **self.source, "dtype": str(self.dtype).removeprefix("torch.")}


# ---------------------------------------------------------------------------------------------
# ONNX encoder/decoder pairs (diffusers' ONNX export layout, or e.g. vaelight)
# ---------------------------------------------------------------------------------------------

INPUT_RANGES = ("minus_one_one", "zero_one")


class OnnxVAE(VAE):
    """An encoder/decoder pair of ONNX files run by onnxruntime.

    The decoder takes latents in the same convention the encoder returns (``latents_out_scaled``)
    and returns images in ``input_range``; multi-scale decoders (vaelight) are summed.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        encoder_path: str | None = None,
        decoder_path: str | None = None,
        input_range: str = "minus_one_one",
        latents_out_scaled: bool = False,
        scaling_factor: float = SD_SCALING_FACTOR,
        shift_factor: float = 0.0,
        channels: int | None = None,
        sum_decoder_outputs: bool = False,
        providers: list[str] | None = None,
        device: str = "cpu",
        backend: str = "onnxruntime",
    ) -> None:
        if backend not in ("onnxruntime", "torch"):
            raise ValueError(f"vae.backend={backend!r}: choose onnxruntime or torch (the graph's nodes run as torch ops, on the GPU too)")
        if input_range not in INPUT_RANGES:
            raise ValueError(f"vae.input_range={input_range!r} is not one of {INPUT_RANGES}")
        self.device = resolve_device(device)
        if model_name_or_path:  # diffusers' ONNX export layout
            encoder_path = encoder_path or os.path.join(model_name_or_path, "vae_encoder", "model.onnx")
            decoder_path = decoder_path or os.path.join(model_name_or_path, "vae_decoder", "model.onnx")
        if not (encoder_path and decoder_path):
            raise ValueError("vae=onnx needs vae.encoder_path=... and vae.decoder_path=... (or vae.model_name_or_path=<folder "
                             "with vae_encoder/model.onnx and vae_decoder/model.onnx>)")
        self.backend = backend
        if backend == "torch":
            from lcgan.onnx_torch import OnnxConvNet

            self.encoder = OnnxConvNet(_existing_file(encoder_path, "encoder_path")).to(self.device)
            self.decoder = OnnxConvNet(_existing_file(decoder_path, "decoder_path")).to(self.device)
        else:
            try:
                import onnxruntime as ort
            except ImportError as e:
                raise ImportError("vae=onnx needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu for CUDA), "
                                  "or vae.backend=torch with the onnx package") from e
            if providers is None:  # CUDA only when asked for (device) and built into this onnxruntime
                cuda = self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
                providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
            options = ort.SessionOptions()
            options.log_severity_level = 3  # onnxruntime warns about unused initializers in many exports
            self.encoder = ort.InferenceSession(_existing_file(encoder_path, "encoder_path"), options, providers=list(providers))
            self.decoder = ort.InferenceSession(_existing_file(decoder_path, "decoder_path"), options, providers=list(providers))
        n_out = len(self.decoder.output_names if backend == "torch" else self.decoder.get_outputs())
        if n_out > 1 and not sum_decoder_outputs:
            raise ValueError(f"the decoder {decoder_path} has {n_out} outputs; set vae.sum_decoder_outputs=true if they are "
                             "scales of one image to be summed (vaelight), or use a single-output decoder")
        self.input_range, self.latents_out_scaled, self.sum_decoder_outputs = input_range, latents_out_scaled, sum_decoder_outputs
        self.source = {"encoder_path": encoder_path, "decoder_path": decoder_path, "input_range": input_range, "backend": backend,
                       "latents_out_scaled": latents_out_scaled, "sum_decoder_outputs": sum_decoder_outputs}
        onnx_channels = (self._torch_channels() if backend == "torch"
                         else self.encoder.get_outputs()[0].shape[1])  # an int when static, a name when dynamic
        if isinstance(onnx_channels, int):
            if channels is not None and channels != onnx_channels:
                raise ValueError(f"vae.channels={channels} but the encoder {encoder_path} outputs {onnx_channels} channels")
            channels = onnx_channels
        if channels is None:
            raise ValueError(f"the encoder {encoder_path} has a dynamic channel dimension; set vae.channels=<latent channels>")
        self.space = LatentSpace(channels=int(channels), scaling_factor=float(scaling_factor), shift_factor=float(shift_factor))

    def _torch_channels(self) -> int:
        """Latent channels of a torch-run encoder: the last conv's output channels."""
        last = [ins for op, ins, _, _ in self.encoder.nodes if op in ("Conv", "ConvTranspose")][-1]
        w = self.encoder._get({}, last[1])
        return int(w.shape[0] if self.encoder.nodes[-1][0] != "ConvTranspose" else w.shape[1])

    def _run(self, session, x: torch.Tensor) -> list:
        if self.backend == "torch":
            return session(x.to(self.device))
        import numpy as np

        inp = session.get_inputs()[0]
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        return session.run(None, {inp.name: x.detach().cpu().numpy().astype(dtype)})

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.input_range == "zero_one":
            x = to_unit(x)
        z = torch.as_tensor(self._run(self.encoder, x)[0]).float()
        if self.latents_out_scaled:
            z = z / self.space.scaling_factor + self.space.shift_factor
        return z.to(self.device)

    def decode_with_grad(self, z: torch.Tensor) -> torch.Tensor:
        if self.backend != "torch" and torch.is_grad_enabled() and z.requires_grad:  # onnxruntime runs on numpy arrays
            raise ValueError("decoding with gradients needs vae.backend=torch: onnxruntime cannot pass them")
        z = z.float()
        if self.latents_out_scaled:
            z = (z - self.space.shift_factor) * self.space.scaling_factor
        outputs = [torch.as_tensor(o).float() for o in self._run(self.decoder, z)]
        if self.sum_decoder_outputs:  # scales of one image: upsample each to the largest and sum
            size = max((o.shape[-2:] for o in outputs), key=lambda s: s[0] * s[1])
            x = sum(F.interpolate(o, size=tuple(size), mode="bilinear", align_corners=False) for o in outputs)
        else:
            x = outputs[0]
        if self.input_range == "zero_one":
            x = from_unit(x)
        return x.clamp(-1, 1).to(self.device)

    def describe(self) -> dict:
        return {**super().describe(), **self.source}
