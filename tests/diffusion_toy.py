"""Tiny synthetic prepared cases for the diffusion tests (the prepared layout of the data contract).

Each case has a head ellipsoid and a lesion (SNFH shell around ET around NETC, plus a cavity) at a
case-specific position; each modality's intensity is a function of the label plus smooth texture, so a
model that follows the mask can be recognised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prepared_run import write_prepared_run

from gliomagen.cases import Case
from gliomagen.config import Config, load_config

#: mean intensity per modality (t1n, t1c, t2w, t2f) for labels bg, head, NETC, SNFH, ET, RC
INTENSITY = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [0.55, 0.5, 0.35, 0.45],
        [0.35, 0.3, 0.7, 0.6],
        [0.45, 0.45, 0.8, 0.9],
        [0.5, 0.95, 0.6, 0.7],
        [0.15, 0.1, 0.95, 0.2],
    ]
)


def toy_case(case_id: str, shape: tuple[int, int, int], seed: int) -> Case:
    """One synthetic prepared case (values 0..5 as in the prepared label map)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    centre = (np.array(shape) - 1) / 2
    radii = np.array(shape) * 0.42
    mask = np.zeros(shape, np.uint8)
    mask[(((grid - centre) / radii) ** 2).sum(-1) <= 1] = 1
    side = rng.choice([-1, 1])
    lesion = centre + np.array([side * shape[0] * 0.18, rng.uniform(-2, 2), rng.uniform(-2, 2)])
    r = min(shape) * rng.uniform(0.2, 0.26)
    dist = np.linalg.norm(grid - lesion, axis=-1)
    mask[dist <= r] = 3
    mask[dist <= 0.65 * r] = 4
    mask[dist <= 0.35 * r] = 2
    cavity = centre + np.array([-side * shape[0] * 0.2, 0, 0])
    mask[np.linalg.norm(grid - cavity, axis=-1) <= min(shape) * 0.12] = 5
    texture = rng.normal(0, 0.03, shape)
    image = np.stack([INTENSITY[mask, m] + texture * (mask > 0) for m in range(4)]).clip(0, 1)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    return Case(case_id, image.astype(np.float32), mask, affine)


def tiny_config(run_dir: Path, *extra: str, shape: tuple[int, int, int] = (16, 16, 16)) -> Config:
    """The smoke profile shrunk to a 8/16-channel net at ``shape`` with T=50, writing into ``run_dir``."""
    overrides = [
        "model.channels=[8, 16]",
        "model.num_res_blocks=1",
        "model.norm_num_groups=8",
        "model.num_head_channels=16",
        f"data.target_shape={list(shape)}",
        "diffusion.timesteps=50",
        "train.max_steps=6",
        "train.lr=2.0e-3",
        "train.batch_size=2",
        "train.grad_accum=1",
        "train.ema_every=1",
        "train.ema_start=2",
        "train.ema_decay=0.9",
        "train.lr_milestones=[3]",
        "train.lr_factors=[1.0, 0.5]",
        "train.freeze_encoder_step=4",
        "train.checkpoint_every=2",
        "train.val_every=3",
        "train.val_cases=1",
        "train.val_timesteps=[5, 25, 45]",
        "train.preview_every=6",
        "train.preview_sampler=ddim",
        "train.preview_steps=5",
        "runtime.device=cpu",
        *extra,
    ]
    return load_config("smoke", overrides, run_dir=run_dir)


def write_prepared(cfg: Config, n_train: int = 4, n_val: int = 2) -> None:
    """Write ``n_train``/``n_val`` toy cases and a ``cases.csv`` into the run's prepared folder."""
    shape = tuple(cfg.data.target_shape)
    write_prepared_run(
        cfg.paths,
        [
            ("train" if i < n_train else "val", toy_case(f"BraTS-GLI-{i:05d}-000", shape, seed=i))
            for i in range(n_train + n_val)
        ],
    )
