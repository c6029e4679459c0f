"""Exponential moving average of the weights, as the paper ran it.

The EMA is a plain copy of the model until ``ema_start``; from then on, every ``ema_every`` optimiser steps,
``ema <- decay * ema + (1 - decay) * model``. The averaging itself is PyTorch's ``AveragedModel`` with
``get_ema_multi_avg_fn``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class EMA:
    """The EMA weights of a model.

    Args:
        model: the trained network (unwrapped, not DDP).
        decay: EMA decay per update (paper 0.995).
        every: update every this many optimiser steps (paper 10).
        start: before this step the EMA is a copy of the model (paper 2000).
    """

    def __init__(self, model: nn.Module, decay: float, every: int, start: int) -> None:
        self.decay, self.every, self.start = decay, every, start
        average = get_ema_multi_avg_fn(decay)  # type: ignore[no-untyped-call]
        self.averaged = AveragedModel(model, multi_avg_fn=average, use_buffers=True)
        self.averaged.requires_grad_(False)
        self.averaged.eval()

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> bool:
        """Apply the rule above after optimiser step ``step`` (1-based); returns whether it changed."""
        if step % self.every:
            return False
        if step < self.start:
            self.module.load_state_dict(model.state_dict())
            # mark as initialised so that the first update after `start` averages instead of copying
            self.averaged.n_averaged.fill_(1)
            return True
        self.averaged.update_parameters(model)
        return True

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.averaged.load_state_dict(state)
