"""Networks: the ResNet generator and the spectral-norm PatchGAN discriminator.

Shapes are latents: ``(B, C, h, w)`` with C the VAE's latent channels (4 for SD1.5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from lcgan.augment import DiffAugment
from lcgan.baselines import BASELINES, LinearMap, apply_linear, kernel


class InstanceNorm(nn.Module):
    """The CycleGAN reference's InstanceNorm (no affine, no running stats); compiled, it keeps its input's layout.

    ``nn.InstanceNorm2d`` runs as a batch norm over the ``(1, N*C, H, W)`` view, a view that needs NCHW:
    in a channels-last network each normalised activation, and its ReLU, left NCHW and was copied back
    to NHWC for the next convolution (about half of the layout copies that took 18% of the compiled
    step's GPU time on an H200; :class:`ReflectionPad` most of the rest; ``experiments/bench/README.md``).
    Compiled, it is :func:`instance_norm`, which Inductor fuses into a kernel or two that keep the layout.
    Eager, it stays torch's one kernel: the five of :func:`instance_norm` made the uncompiled step (the
    start of a CUDA run, any CPU run) 25% slower on an H200. No parameters or buffers: checkpoints of
    either class load into the other.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps  # channels: for the repr and torch's class (lcgan.bench)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return instance_norm(x, self.eps)
        return F.instance_norm(x, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}"


def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Instance normalisation in plain ops, so the output keeps ``x``'s memory layout; statistics in fp32
    (as cuDNN computes them) whatever the autocast dtype, the result in ``x``'s dtype."""
    x32 = x.float()
    var, mean = torch.var_mean(x32, dim=(2, 3), correction=0, keepdim=True)
    return ((x32 - mean) * torch.rsqrt(var + eps)).to(x.dtype)


class ReflectionPad(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d`` that returns a channels-last input's padding channels-last.

    Torch's pad returns NCHW whatever it is given. Compiled, that NCHW tensor is what the step saves for the
    backward of the convolution it feeds, and each weight gradient copied it to NHWC again (76 copies a
    step of resnet9 on an H200); the forward wrote it twice, once in each layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            return out.contiguous(memory_format=torch.channels_last)
        return out


def _norm(channels: int) -> nn.Module:
    return InstanceNorm(channels)


class ResnetBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ReflectionPad(1), nn.Conv2d(channels, channels, 3), _norm(channels), nn.ReLU(True),
            ReflectionPad(1), nn.Conv2d(channels, channels, 3), _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Johnson et al.'s ResNet generator as used by CycleGAN, for latents.

    ``output="tanh"``: the reference design, ``tanh(net(z))``: outputs live in [-1, 1].
    ``output="residual"``: ``z + net(z)`` with the last conv zero-initialised, so training starts
    at the identity map and learns a correction (no tanh; latents are not bounded).
    ``anchor`` (residual only): start instead from a closed-form baseline of :mod:`lcgan.baselines`,
    ``a(z) + net(z)`` with ``a`` a linear map (per-channel ``mean_shift`` / ``moment_match``, full
    covariance ``gaussian_ot``, 3x3 ``patch_ot``, or either ``_shrunk`` toward the identity by its
    chance move) fitted on the training domains and given by
    :meth:`set_anchor` (saved with the weights as the buffers ``anchor_weight``, ``anchor_bias``).
    """

    def __init__(
        self,
        in_channels: int,
        ngf: int = 64,
        n_blocks: int = 6,
        n_downsampling: int = 2,
        output: str = "residual",  # the defaults of conf/model/*.yaml: one default per setting
        anchor: str = "gaussian_ot_shrunk",
    ) -> None:
        super().__init__()
        if output not in ("tanh", "residual"):
            raise ValueError(f"output={output!r}: choose 'tanh' or 'residual'")
        if anchor not in ("identity", *BASELINES) or (anchor != "identity" and output != "residual"):
            raise ValueError(f"anchor={anchor!r}: choose identity or one of {', '.join(BASELINES)}; those need output=residual "
                             f"(output={output!r}: set model.generator.anchor=identity)")
        self.anchor = anchor
        if anchor != "identity":  # the baseline map, an identity until set_anchor gives the fitted one
            k = kernel(anchor)
            weight = torch.zeros(in_channels, in_channels, k, k)
            weight[:, :, k // 2, k // 2] = torch.eye(in_channels)
            self.register_buffer("anchor_weight", weight)
            self.register_buffer("anchor_bias", torch.zeros(in_channels))
            self._register_load_state_dict_pre_hook(_legacy_anchor)
        for name, value, low in (("ngf", ngf, 1), ("n_blocks", n_blocks, 0), ("n_downsampling", n_downsampling, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} must be an integer >= {low}")
        self.output = output
        layers: list[nn.Module] = [ReflectionPad(3), nn.Conv2d(in_channels, ngf, 7), _norm(ngf), nn.ReLU(True)]
        self._points = [-1, len(layers) - 1]  # feature_points: the input, the stem
        ch = ngf
        for _ in range(n_downsampling):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), _norm(ch * 2), nn.ReLU(True)]
            self._points.append(len(layers) - 1)
            ch *= 2
        for _ in range(n_blocks):
            layers.append(ResnetBlock(ch))
            self._points.append(len(layers) - 1)
        for _ in range(n_downsampling):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1), _norm(ch // 2), nn.ReLU(True)]
            ch //= 2
        last = nn.Conv2d(ch, in_channels, 7)
        if output == "residual":
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers += [ReflectionPad(3), last]
        self.net = nn.Sequential(*layers)
        self.factor = 2**n_downsampling  # inputs must be divisible by this

    def set_anchor(self, linear_map: LinearMap) -> None:
        """The baseline map (:func:`lcgan.baselines.fit`) that a residual output starts from."""
        if linear_map.weight.shape != self.anchor_weight.shape:
            raise ValueError(f"anchor={self.anchor!r} takes a map of shape {tuple(self.anchor_weight.shape)}, "
                             f"got {tuple(linear_map.weight.shape)}")
        self.anchor_weight.copy_(linear_map.weight)
        self.anchor_bias.copy_(linear_map.bias)

    def base(self, z: torch.Tensor) -> torch.Tensor:
        """The map a residual output starts from and corrects: its anchor (or ``z`` for ``anchor=identity``)."""
        if self.output != "residual":
            raise ValueError("a tanh generator has no starting map: train.lambda_anchor needs model.generator.output=residual")
        return z if self.anchor == "identity" else apply_linear(z, self.anchor_weight, self.anchor_bias)

    def feature_points(self) -> list[int]:
        """Where :meth:`features` can read the encoder, as indices of ``net`` (-1: the input): the input, the stem, each
        downsampling, each residual block (CUT's choice for its ResNet: the first five). Each is a fresh tensor, never
        changed in place by a later layer."""
        return list(self._points)

    def features(self, z: torch.Tensor, points: list[int]) -> list[torch.Tensor]:
        """The activations at ``points`` (indices of :meth:`feature_points`), running ``net`` only as far as needed."""
        where = [self._points[p] for p in points]
        seen, x = {-1: z}, z
        for i, layer in enumerate(self.net[: max(where) + 1]):
            x = layer(x)
            seen[i] = x
        return [seen[i] for i in where]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        if self.output == "tanh":
            return torch.tanh(out)
        return self.base(z) + out


def _legacy_anchor(state: dict, prefix: str, *args) -> None:
    """Checkpoints before the general anchor stored a per-channel ``z * anchor_scale + anchor_shift``."""
    scale, shift = state.pop(prefix + "anchor_scale", None), state.pop(prefix + "anchor_shift", None)
    if scale is not None and shift is not None:
        state[prefix + "anchor_weight"] = torch.diag(scale.flatten()).view(len(scale.flatten()), -1, 1, 1)
        state[prefix + "anchor_bias"] = shift.flatten()


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix's NLayerDiscriminator) with spectral norm instead of normalisation layers.

    Each output cell judges a patch of the input; ``n_layers`` stride-2 convs set the patch size.
    ``n_layers=2`` sees 34x34 latent cells (a whole 16x16 or 32x32 latent), 3 sees 70. ``n_layers=0``
    is :class:`LocalDiscriminator` with ``kernel=1`` (the configs of older runs spell the pixel D so).
    ``augment``: DiffAugment policy applied to every input in training mode (:mod:`lcgan.augment`).
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, augment: str = "") -> None:
        super().__init__()
        self.augment = DiffAugment(augment or "")
        self.net = nn.Sequential(*(_local_layers(in_channels, ndf, 1) if n_layers == 0 else _patch_layers(in_channels, ndf, n_layers)))
        self.min_size = 3 * 2**n_layers if n_layers else 1  # smaller inputs leave no output cell

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.augment(z))


class LocalDiscriminator(nn.Module):
    """A discriminator that judges ``kernel x kernel`` latent cells at a time, alone.

    ``kernel=1`` is pix2pix's PixelDiscriminator (1x1 convs): the distribution of latent vectors, blind
    to content and layout (colour and tone). ``kernel=3`` (24x24 pixels of an SD-family VAE) also sees
    local texture, edges and sharpness, still far too little of a photo to tell two photo sets apart by
    what they show. A ``kernel`` conv without padding (no border cells to memorise), then two 1x1 convs.
    """

    def __init__(self, in_channels: int, ndf: int = 64, kernel: int = 3, augment: str = "") -> None:
        super().__init__()
        self.augment = DiffAugment(augment or "")
        self.net = nn.Sequential(*_local_layers(in_channels, ndf, kernel))
        self.min_size = kernel

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.augment(z))


def _local_layers(in_channels: int, ndf: int, kernel: int) -> list[nn.Module]:
    return [spectral_norm(nn.Conv2d(in_channels, ndf, kernel)), nn.LeakyReLU(0.2, True),
            spectral_norm(nn.Conv2d(ndf, 2 * ndf, 1)), nn.LeakyReLU(0.2, True),
            spectral_norm(nn.Conv2d(2 * ndf, 1, 1))]


def _patch_layers(in_channels: int, ndf: int, n_layers: int) -> list[nn.Module]:
    layers: list[nn.Module] = [spectral_norm(nn.Conv2d(in_channels, ndf, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
    ch = ndf
    for i in range(1, n_layers + 1):
        out = ndf * min(2**i, 8)
        stride = 2 if i < n_layers else 1
        layers += [spectral_norm(nn.Conv2d(ch, out, 4, stride, 1)), nn.LeakyReLU(0.2, True)]
        ch = out
    layers.append(spectral_norm(nn.Conv2d(ch, 1, 4, 1, 1)))
    return layers
