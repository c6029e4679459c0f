"""The denoiser: MONAI's ``DiffusionModelUNet`` configured like the paper's guided-diffusion 3D U-Net.

Conditioning is by concatenation: the network sees ``4`` noisy modality channels followed by the one-hot
mask (see :func:`encode_mask`) and predicts the noise of the ``4`` modality channels.

Known differences to the reference network that a parameter count cannot see (measured, see DESIGN.md):
MONAI upsamples with nearest neighbours (reference: trilinear), uses a time-embedding max period of 10000
(reference: 1000) and does not zero-initialise the attention output projection. They change the function
class only marginally, so the paper profile keeps MONAI's network as is and reports them here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
from torch import nn
from torch.utils.checkpoint import checkpoint

from gliomagen.config import MODALITIES, Config

#: Parameter count of the original network (PAPER.md §2), for the summary table.
PAPER_PARAMETERS = 57_566_020


# ----------------------------------------------------------------------------------------- mask encoding
def mask_channel_values(cfg: Config) -> list[int | None]:
    """Prepared-mask value encoded by each conditioning channel (``None``: the always-zero channel).

    ``compact``: one channel per non-background label of ``cfg.data.labels`` (sorted by value).
    ``paper``: the reference's encoding, one-hot of the values ``1..K`` with ``K`` the number of labels
    including background, so with the six labels 0..5 it has six channels and the last is always zero.

    Args:
        cfg: run configuration (label map and ``model.mask_encoding``).
    """
    values = sorted(lab.value for lab in cfg.data.labels if lab.value != 0)
    if cfg.model.mask_encoding == "compact":
        return list(values)
    known = set(values)
    return [v if v in known else None for v in range(1, len(cfg.data.labels) + 1)]


def n_mask_channels(cfg: Config) -> int:
    """Number of conditioning channels for the profile's label map and mask encoding."""
    return len(mask_channel_values(cfg))


def encode_mask(mask: np.ndarray | torch.Tensor, cfg: Config) -> torch.Tensor:
    """One-hot encode a prepared mask for conditioning (background dropped).

    Args:
        mask: integer mask ``(X, Y, Z)`` or a batch ``(B, X, Y, Z)``.
        cfg: run configuration.

    Returns:
        float32 tensor ``(C, X, Y, Z)`` or ``(B, C, X, Y, Z)`` with ``C = n_mask_channels(cfg)``.

    Raises:
        ValueError: if the mask holds a value that is not in ``cfg.data.labels``.
    """
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).long()
    allowed = {lab.value for lab in cfg.data.labels}
    present = set(torch.unique(m).tolist())
    if not present <= allowed:
        raise ValueError(
            f"mask holds values {sorted(present - allowed)} that are not in the label map "
            f"{sorted(allowed)} (data.labels)"
        )
    channels = [
        (m == v) if v is not None else torch.zeros_like(m, dtype=torch.bool) for v in mask_channel_values(cfg)
    ]
    return torch.stack(channels, dim=-4).float()


# ----------------------------------------------------------------------------------------------- network
def build_model(cfg: Config, device: torch.device | str | None = None) -> DiffusionModelUNet:
    """The 3D denoiser for ``cfg`` (MONAI ``DiffusionModelUNet``), optionally on the ``meta`` device.

    Args:
        cfg: run configuration (``model`` section and the label map for the input channels).
        device: where to create the parameters; ``"meta"`` builds the paper network without memory.
    """
    m = cfg.model
    with torch.device(device) if device is not None else _nullcontext():
        net = DiffusionModelUNet(
            spatial_dims=3,
            in_channels=len(MODALITIES) + n_mask_channels(cfg),
            out_channels=len(MODALITIES),
            num_res_blocks=m.num_res_blocks,
            channels=tuple(m.channels),
            # the reference has attention only in its middle block; MONAI always adds that one
            attention_levels=(False,) * len(m.channels),
            norm_num_groups=m.norm_num_groups,
            norm_eps=m.norm_eps,
            num_head_channels=m.num_head_channels,
            resblock_updown=False,
            include_fc=True,
        )
    return net


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _CheckpointedResBlock(DiffusionUNetResnetBlock):
    """A res-block that recomputes its activations in backward (trades ~25 % time for memory).

    MONAI 1.6 has no checkpointing flag for this network and its ``ActivationCheckpointWrapper`` takes one
    input, while res-blocks take ``(x, emb)``; swapping the class keeps the state-dict keys unchanged.
    """

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            return checkpoint(super().forward, x, emb, use_reentrant=False)
        return super().forward(x, emb)


def enable_grad_checkpointing(net: nn.Module) -> int:
    """Turn on activation checkpointing for every res-block of ``net``; returns how many were wrapped."""
    n = 0
    for module in net.modules():
        if type(module) is DiffusionUNetResnetBlock:
            module.__class__ = _CheckpointedResBlock
            n += 1
    return n


def encoder_parameters(net: DiffusionModelUNet) -> list[nn.Parameter]:
    """The "input blocks" of the reference (first convolution and the down path), frozen late in training."""
    return [*net.conv_in.parameters(), *net.down_blocks.parameters()]


def set_encoder_frozen(net: DiffusionModelUNet, frozen: bool) -> None:
    for p in encoder_parameters(net):
        p.requires_grad_(not frozen)


# ----------------------------------------------------------------------------------------------- summary
def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@dataclass
class LevelShape:
    """Tensor shape leaving one part of the U-Net (for the model-summary table)."""

    block: str
    shape: tuple[int, ...]
    parameters: int


def level_shapes(net: DiffusionModelUNet, input_shape: tuple[int, ...]) -> list[LevelShape]:
    """Run one forward on the ``meta`` device copy of ``net`` and record the output shape of each block.

    Args:
        net: the network (any device; a meta copy is used, so no memory or compute is spent).
        input_shape: ``(B, C, X, Y, Z)``.
    """
    shapes: list[LevelShape] = []
    meta = _meta_copy(net)
    hooks = []
    parts = [("conv_in", meta.conv_in)]
    parts += [(f"down_{i}", b) for i, b in enumerate(meta.down_blocks)]
    parts += [("middle", meta.middle_block)]
    parts += [(f"up_{i}", b) for i, b in enumerate(meta.up_blocks)]
    parts += [("out", meta.out)]
    for name, module in parts:

        def hook(
            _m: nn.Module, _inp: object, out: object, name: str = name, module: nn.Module = module
        ) -> None:
            t = out[0] if isinstance(out, tuple) else out
            shapes.append(LevelShape(name, tuple(t.shape), count_parameters(module)))

        hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        meta(torch.empty(input_shape, device="meta"), torch.zeros(input_shape[0], device="meta"))
    for h in hooks:
        h.remove()
    return shapes


def forward_flops(net: DiffusionModelUNet, input_shape: tuple[int, ...]) -> float:
    """Floating-point operations of one forward pass (2 per multiply-add), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = _meta_copy(net)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta(torch.empty(input_shape, device="meta"), torch.zeros(input_shape[0], device="meta"))
    return float(counter.get_total_flops())


def _meta_copy(net: nn.Module) -> nn.Module:
    if next(net.parameters()).device.type == "meta":
        return net
    import copy

    meta = copy.deepcopy(net).to("meta")
    return meta


def model_summary(cfg: Config, batch: int = 1) -> dict[str, object]:
    """Parameters, FLOPs and per-level shapes of the profile's network at its target shape (meta device).

    Args:
        cfg: run configuration.
        batch: batch size of the shape table.
    """
    net = build_model(cfg, device="meta")
    shape = (batch, len(MODALITIES) + n_mask_channels(cfg), *cfg.data.target_shape)
    params = count_parameters(net)
    return {
        "parameters": params,
        "paper_parameters": PAPER_PARAMETERS,
        "difference": params - PAPER_PARAMETERS,
        "input_shape": shape,
        "forward_tflop": forward_flops(net, shape) / 1e12,
        "levels": level_shapes(net, shape),
    }
