"""DiffAugment on the discriminators' inputs and the 1x1 pixel discriminator."""
from __future__ import annotations

import pytest
import torch

from lcgan.augment import DiffAugment, cutout, translation
from lcgan.models import LocalDiscriminator, PatchDiscriminator


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


@pytest.mark.parametrize("make, size, cell, seen", [
    (lambda: PatchDiscriminator(4, ndf=8, n_layers=0), (5, 7), (2, 3), (slice(2, 3), slice(3, 4))),  # old runs' pixel D
    (lambda: LocalDiscriminator(4, ndf=8, kernel=1), (5, 7), (2, 3), (slice(2, 3), slice(3, 4))),
    (lambda: LocalDiscriminator(4, ndf=8, kernel=3), (9, 9), (4, 4), (slice(2, 5), slice(2, 5))),  # no padding: 7x7 scores
])
def test_local_discriminators_judge_only_the_cells_around_a_change(make, size, cell, seen):
    d = make().eval()  # eval: spectral norm's weights fixed between calls
    k = d.min_size
    z = torch.randn(2, 4, *size)
    out = d(z)
    assert out.shape == (2, 1, size[0] - k + 1, size[1] - k + 1)
    z2 = z.clone()
    z2[:, :, cell[0], cell[1]] += 1.0
    changed = (d(z2) != out).squeeze(1)
    assert changed[:, seen[0], seen[1]].all() and changed.sum() == 2 * k * k, "only the scores whose cells include the change move"


def test_an_old_runs_pixel_discriminator_loads_into_the_new_class():
    LocalDiscriminator(4, ndf=8, kernel=1).load_state_dict(PatchDiscriminator(4, ndf=8, n_layers=0).state_dict())


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
