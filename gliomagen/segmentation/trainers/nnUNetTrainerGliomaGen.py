"""``nnUNetTrainerGliomaGen``: nnU-Net's default trainer with its schedule read from the environment.

The paper trained nnU-Net's default ``nnUNetTrainer`` (1000 epochs x 250 iterations, SGD lr 0.01, Dice+CE).
This subclass changes nothing but the number of epochs and iterations, taken from
``GLIOMAGEN_NNUNET_EPOCHS``, ``GLIOMAGEN_NNUNET_ITERATIONS`` and ``GLIOMAGEN_NNUNET_VAL_ITERATIONS``
(so the smoke profile can train a few iterations on a CPU with the same code), and seeds Python, NumPy
and torch from ``GLIOMAGEN_NNUNET_SEED`` so that a run with single-threaded augmentation
(``nnUNet_n_proc_DA=0``) is repeatable. With the paper's values it trains exactly like ``nnUNetTrainer``.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


class nnUNetTrainerGliomaGen(nnUNetTrainer):  # noqa: N801 -- nnU-Net finds trainers by this naming style
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 -- nnU-Net's own signature
    ):
        seed = _env_int("GLIOMAGEN_NNUNET_SEED", -1)
        if seed >= 0:
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = _env_int("GLIOMAGEN_NNUNET_EPOCHS", self.num_epochs)
        self.num_iterations_per_epoch = _env_int("GLIOMAGEN_NNUNET_ITERATIONS", self.num_iterations_per_epoch)
        self.num_val_iterations_per_epoch = _env_int(
            "GLIOMAGEN_NNUNET_VAL_ITERATIONS", self.num_val_iterations_per_epoch
        )
