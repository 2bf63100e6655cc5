"""DiffAugment on the discriminators' inputs and the 1x1 pixel discriminator."""
from __future__ import annotations

import pytest
import torch

from lcgan.augment import DiffAugment, cutout, translation
from lcgan.models import PatchDiscriminator


def test_translation_shifts_each_sample_by_at_most_the_ratio():
    torch.manual_seed(0)
    z = torch.zeros(64, 2, 16, 16)
    z[:, :, 8, 8] = 1.0  # one bright cell in the middle of every sample
    out = translation(z, ratio=0.125)  # up to 2 cells each way
    assert out.shape == z.shape
    rows, cols = (out[:, 0] == 1).nonzero()[:, 1:].T
    assert ((rows - 8).abs() <= 2).all() and ((cols - 8).abs() <= 2).all()
    assert (out[:, 0] == 1).flatten(1).sum(1).eq(1).all(), "a shift moves the cell, it does not copy or drop it"
    assert len({(r, c) for r, c in zip(rows.tolist(), cols.tolist())}) > 5, "samples get different shifts"
    assert torch.equal(out[:, 0], out[:, 1]), "all channels move together"


def test_cutout_zeros_one_square_per_sample():
    torch.manual_seed(0)
    z = torch.ones(32, 4, 16, 16)
    out = cutout(z, ratio=0.5)
    zeros = (out == 0).all(1)  # (n, h, w): zeroed in every channel
    assert zeros.flatten(1).sum(1).eq(64).all(), "an 8x8 square"
    assert (out[~zeros.unsqueeze(1).expand_as(out)] == 1).all(), "the rest untouched"
    assert len({tuple(m.nonzero()[0].tolist()) for m in zeros}) > 3, "squares at different places"


def test_augment_only_in_training_mode_and_passes_gradients():
    aug = DiffAugment("translation,cutout")
    z = torch.randn(8, 4, 16, 16, requires_grad=True)
    aug(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0, "G's adversarial loss must reach G through the augmentation"
    aug.eval()
    assert aug(z) is z


def test_unknown_policy_names_the_options():
    with pytest.raises(ValueError, match="translation,cutout"):
        DiffAugment("translation,color")


def test_discriminator_augments_its_inputs_while_training():
    d = PatchDiscriminator(4, ndf=8, n_layers=1, augment="translation,cutout")
    d.net.eval()  # freeze spectral norm's power iteration, which also changes outputs between training calls
    z = torch.randn(4, 4, 16, 16)
    assert not torch.equal(d(z), d(z)), "a fresh augmentation per call"
    d.eval()
    assert torch.equal(d(z), d(z)), "none at evaluation"
    assert torch.equal(d(z), d.net(z))


def test_pixel_discriminator_judges_each_cell_alone():
    d = PatchDiscriminator(4, ndf=8, n_layers=0).eval()  # eval: spectral norm's weights fixed between calls
    z = torch.randn(2, 4, 5, 7)
    out = d(z)
    assert out.shape == (2, 1, 5, 7) and d.min_size == 1
    z2 = z.clone()
    z2[:, :, 2, 3] += 1.0
    changed = (d(z2) != out).squeeze(1)
    assert changed[:, 2, 3].all() and changed.sum() == 2, "only the changed cell's score moves: blind to layout"


def test_local_discriminator_sees_3x3_cells_and_pixel_layout_matches_old_runs():
    from lcgan.models import LocalDiscriminator

    d = LocalDiscriminator(4, ndf=8, kernel=3).eval()
    z = torch.randn(2, 4, 9, 9)
    out = d(z)
    assert out.shape == (2, 1, 7, 7) and d.min_size == 3
    z2 = z.clone()
    z2[:, :, 4, 4] += 1.0
    changed = (d(z2) != out).squeeze(1)
    assert changed[:, 2:5, 2:5].all() and changed.sum() == 2 * 9, "a cell moves the 3x3 scores around it, no others"
    # an old run's pixel D (PatchDiscriminator n_layers=0) loads into the new class: resume keeps working
    old = PatchDiscriminator(4, ndf=8, n_layers=0)
    LocalDiscriminator(4, ndf=8, kernel=1).load_state_dict(old.state_dict())


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_augmentation_survives_torch_compile(device):
    # on CUDA the step is compiled and replayed as CUDA graphs by default (train.compile/cuda_graphs=auto):
    # the augmentation must be traced into the graph with fresh random draws per call (per replay on CUDA),
    # not frozen at trace or capture time
    d = PatchDiscriminator(4, ndf=8, n_layers=1, augment="translation,cutout").to(device)
    d.net.eval()  # fixed spectral norm: only the augmentation can change the output
    loss = torch.compile(lambda z: d(z).pow(2).mean(), mode="reduce-overhead" if device == "cuda" else None)
    z = torch.randn(4, 4, 16, 16, device=device, requires_grad=True)
    values = []
    for i in range(6):  # CUDA graph trees: warm-up, record, then replays
        if device == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        out = loss(z)
        if i == 0:
            out.backward()
            assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
        values.append(out.item())
    assert len(set(values[-3:])) == 3, f"repeated values: the augmentation was frozen ({values})"
