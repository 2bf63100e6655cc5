"""Replay buffer of past fakes for the discriminators (Shrivastava et al. 2017, as in CycleGAN)."""
from __future__ import annotations

import torch


class FakeBuffer:
    """Holds up to ``size`` past generated latents, on the device of the fakes.

    ``query(fakes)``: while filling, each fake is stored and returned; once full, each returned
    item is, with probability 1/2, a random stored fake (which the new one replaces) and otherwise
    the new fake. Vectorised and without host synchronisation: the fill level is a Python int
    that advances by the batch size, never read back from the GPU. What it returns keeps the fakes'
    memory layout (channels-last on CUDA), so the discriminators' compiled graph gets no NCHW input
    to copy (a small tensor: the step time did not change measurably, experiments/bench/README.md).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.count = 0
        self.data: torch.Tensor | None = None

    @torch.no_grad()
    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return fakes
        fakes = fakes.detach()
        if self.data is None:
            self.data = torch.empty((self.size, *fakes.shape[1:]), dtype=fakes.dtype, device=fakes.device,
                                    memory_format=_layout(fakes))
        elif self.data.dtype != fakes.dtype or self.data.device != fakes.device:  # resumed from a run in another precision or place
            self.data = self.data.to(device=fakes.device, dtype=fakes.dtype)
        n_new = min(self.size - self.count, len(fakes))
        if n_new > 0:
            self.data[self.count:self.count + n_new] = fakes[:n_new]
            self.count += n_new
        rest = fakes[n_new:]
        if len(rest) == 0:
            return fakes
        swap = torch.rand(len(rest), device=rest.device) < 0.5
        idx = torch.randint(0, self.size, (len(rest),), device=rest.device)
        stored = self.data[idx]  # indexing keeps the store's layout; index_select would return NCHW
        # out= pins the result to the fakes' layout, whatever the store's (a resumed one may be NCHW)
        out = torch.where(swap.view(-1, 1, 1, 1), stored, rest, out=torch.empty_like(rest))
        # swapped slots take the new fake; the others are written back unchanged
        self.data.index_copy_(0, idx, torch.where(swap.view(-1, 1, 1, 1), rest, stored))
        return torch.cat([fakes[:n_new], out]) if n_new > 0 else out

    def state_dict(self) -> dict:
        return {"size": self.size, "count": self.count, "data": self.data}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size:
            raise ValueError(f"checkpoint replay buffer holds {state['size']} fakes but train.fake_buffer_size={self.size}")
        self.count, self.data = int(state["count"]), state["data"]


def _layout(fakes: torch.Tensor) -> torch.memory_format:
    dense_nhwc = fakes.dim() == 4 and not fakes.is_contiguous() and fakes.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if dense_nhwc else torch.contiguous_format
