"""Config sections of the network, the diffusion process and its training (``model:``, ``diffusion:``,
``train:``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gliomagen.config.base import _Section


class ModelConfig(_Section):
    """The denoiser: MONAI ``DiffusionModelUNet`` configured like the paper's network.

    Args:
        channels: feature channels per resolution level (paper: 64, 64, 128, 192, 256; 57.6 M parameters).
        num_res_blocks: residual blocks per level.
        norm_num_groups: GroupNorm groups.
        norm_eps: GroupNorm epsilon.
        num_head_channels: channels per attention head of the middle block (paper: one head).
        mask_encoding: ``paper`` (the original's mask channels) or ``compact`` (one channel per label).
        upsample_mode: ``trilinear`` (the original network) or ``nearest`` (MONAI's default).
        time_embed_max_period: max period of the sinusoidal time embedding (original: 1000; MONAI: 10000).
        zero_init_attention_out: zero-initialise the attention output projection (original: true).
    """

    channels: tuple[int, ...] = (64, 64, 128, 192, 256)
    num_res_blocks: int = Field(2, ge=1)
    norm_num_groups: int = Field(32, ge=1)
    norm_eps: float = Field(1e-5, gt=0)
    num_head_channels: int = Field(256, ge=1)
    mask_encoding: Literal["paper", "compact"] = "paper"
    # the reference network's forward (paper profile); MONAI's defaults: nearest, 10000, false
    upsample_mode: Literal["nearest", "trilinear"] = "trilinear"
    time_embed_max_period: int = Field(1000, ge=2)
    zero_init_attention_out: bool = True

    @model_validator(mode="after")
    def _divisible(self) -> ModelConfig:
        bad = [c for c in self.channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(
                f"channels {bad} are not multiples of norm_num_groups={self.norm_num_groups}; "
                "GroupNorm needs whole groups"
            )
        if self.channels[-1] % self.num_head_channels:
            raise ValueError(
                f"num_head_channels={self.num_head_channels} must divide the last channel count "
                f"{self.channels[-1]} (the middle block's attention); the paper uses one head: set it equal"
            )
        return self


class DiffusionConfig(_Section):
    """The forward process and the training objective.

    Args:
        timesteps: diffusion steps T (paper: 1000).
        schedule: noise schedule (paper: cosine).
        cosine_s: offset ``s`` of the cosine schedule.
        beta_max: largest beta (the cosine schedule is clipped there).
        prediction: what the network predicts: ``epsilon`` (paper), ``sample`` (x0) or ``v_prediction``.
        loss: ``l1`` (paper) or ``l2``.
    """

    timesteps: int = Field(1000, ge=2)
    schedule: Literal["cosine", "linear_beta", "scaled_linear_beta"] = "cosine"
    cosine_s: float = Field(0.008, gt=0)
    beta_max: float = Field(0.999, gt=0, le=1)
    prediction: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    loss: Literal["l1", "l2"] = "l1"


class TrainConfig(_Section):
    """Diffusion training (``gliomagen train``, notebook 02).

    Args:
        max_steps: optimiser steps (paper: 245 000).
        lr: base learning rate.
        batch_size: volumes per forward pass.
        grad_accum: forward passes per optimiser step.
        ema_decay: EMA decay of the weights used for sampling.
        ema_every: steps between EMA updates.
        ema_start: first step of the EMA (the EMA copies the weights before it).
        lr_milestones: steps where the learning rate changes.
        lr_factors: factor of ``lr`` before the first milestone and after each (one more than milestones).
        freeze_encoder_step: step after which the encoder is frozen (``null``: never).
        checkpoint_every: steps between checkpoints.
        keep_checkpoints: newest ``step_*.pt`` kept (``null``: all); ``best.pt``/``last.pt`` always kept.
        val_every: steps between validation losses.
        val_cases: validation cases in the validation loss.
        val_timesteps: diffusion steps at which the validation loss is measured.
        early_stopping_patience: validations without improvement before stopping (``null``: never).
        preview_every: steps between preview samples.
        preview_sampler: sampler of the previews.
        preview_steps: sampling steps of the previews.
        bf16: bf16 autocast (fast on GPUs with bf16 units and CPUs with AVX512-BF16/AMX). Recommended
            with ``grad_checkpointing`` on a 16 GB card: about 11 GiB of tensors at 192x192x144
            (benchmarks/README.md, memory law); off by default because it changes the arithmetic.
        grad_checkpointing: recompute activations in the backward pass (exact: the same gradients bit for
            bit; about 21 GiB of tensors at 192x192x144 in fp32 instead of 66 GiB, so a 24 GB card trains
            the paper model; more time per step). Turn it off on an 80 GB card for speed.
        channels_last: channels-last-3d memory format.
        compile: ``torch.compile`` the network.
        seed: seed of initialisation, case order and noise.
    """

    max_steps: int = Field(245_000, ge=1)
    lr: float = Field(1e-5, gt=0)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(2, ge=1)
    ema_decay: float = Field(0.995, gt=0, lt=1)
    ema_every: int = Field(10, ge=1)
    ema_start: int = Field(2000, ge=0)
    lr_milestones: list[int] = [65_000, 75_000, 85_000, 100_000]
    lr_factors: list[float] = [1.0, 0.75, 0.5, 0.25, 0.1]
    freeze_encoder_step: int | None = 170_000
    checkpoint_every: int = Field(2500, ge=1)
    keep_checkpoints: int | None = Field(5, ge=1)  # newest step_*.pt kept (None: all); best/last always
    val_every: int = Field(2500, ge=1)
    val_cases: int = Field(8, ge=1)
    val_timesteps: list[int] = [50, 250, 500, 750, 950]
    early_stopping_patience: int | None = None
    preview_every: int = Field(25_000, ge=1)
    preview_sampler: Literal["ddpm", "ddim", "dpmpp", "unipc"] = "ddim"
    preview_steps: int = Field(100, ge=1)
    bf16: bool = False
    grad_checkpointing: bool = True
    channels_last: bool = False
    compile: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _schedule_consistent(self) -> TrainConfig:
        if len(self.lr_factors) != len(self.lr_milestones) + 1:
            raise ValueError(
                f"lr_factors needs one more entry than lr_milestones "
                f"({len(self.lr_milestones)} milestones, {len(self.lr_factors)} factors)"
            )
        if sorted(self.lr_milestones) != self.lr_milestones:
            raise ValueError(f"lr_milestones must increase, got {self.lr_milestones}")
        return self
