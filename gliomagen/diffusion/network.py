"""The denoiser: MONAI's ``DiffusionModelUNet`` configured like the paper's guided-diffusion 3D U-Net.

Conditioning is by concatenation: the network sees ``4`` noisy modality channels followed by the one-hot
mask (see :func:`encode_mask`) and predicts the noise of the ``4`` modality channels.

MONAI's network has the reference's parameter count but differs from it in three ways a count cannot see
(measured, docs/method.md): it upsamples with nearest neighbours (reference: trilinear), its sinusoidal
time embedding has a max period of 10000 (reference: 1000), and it does not zero-initialise the attention
output projection. Each is a named model option here (``model.upsample_mode``,
``model.time_embed_max_period``, ``model.zero_init_attention_out``), implemented by the small subclass
:class:`GliomaGenUNet` (same modules, same state-dict keys as MONAI's). The paper profile turns all three
on, so the original's released weights (``gliomagen import-weights``) compute the original's function;
MONAI's defaults stay available (the smoke profile keeps them).

Activation checkpointing (:func:`enable_grad_checkpointing`) lives in the forward it recomputes, so this
module is over 400 lines on purpose: the network, its exact-gradient checkpointing and its summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from monai.networks.blocks.selfattention import SABlock
from monai.networks.nets.diffusion_model_unet import DiffusionModelUNet, DiffusionUNetResnetBlock
from torch import nn
from torch.utils.checkpoint import checkpoint

from gliomagen.config import MODALITIES, Config

#: Parameter count of the original network (docs/method.md), for the summary table.
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
    if m.numel() and int(m.min()) >= 0 and int(m.max()) < 2**16:  # one pass instead of unique's sort
        present = set(torch.nonzero(torch.bincount(m.flatten())).flatten().tolist())
    else:
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
#: MONAI's defaults for the three options (the paper's values: trilinear, 1000, True)
MONAI_UPSAMPLE_MODE = "nearest"
MONAI_TIME_EMBED_MAX_PERIOD = 10000


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t w_i), sin(t w_i)]`` with ``w_i = max_period^(-i / (dim // 2))``.

    The same formula as MONAI's ``get_timestep_embedding`` and guided-diffusion's ``timestep_embedding``
    (cosines first, then sines; a zero column for odd ``dim``); only the max period differs between them.

    Args:
        timesteps: ``(B,)`` timesteps (may be fractional).
        dim: embedding size (the first level's channel count).
        max_period: the longest wavelength (MONAI 10000, the reference 1000).
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must be a 1D tensor, got shape {tuple(timesteps.shape)}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / half)
    args = timesteps[:, None].float() * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1, 0, 0))
    return emb


class GliomaGenUNet(DiffusionModelUNet):
    """MONAI's ``DiffusionModelUNet`` with the reference's upsampling, time-embedding period and init.

    Not a fork: the modules (and so the state-dict keys and parameter count) are MONAI's. The constructor
    sets the interpolation mode of MONAI's non-trainable upsamplers and optionally zeroes the attention
    output projections; :meth:`forward` is MONAI's forward for this use (no cross-attention context, class
    labels or ControlNet residuals) with the time embedding's max period as a parameter.

    Args:
        upsample_mode: ``nearest`` (MONAI) or ``trilinear`` (reference; ``align_corners=False`` as
            ``F.interpolate``'s default, which the reference uses).
        time_embed_max_period: max period of the sinusoidal time embedding (MONAI 10000, reference 1000).
        zero_init_attention_out: start the attention output projections at zero (reference).
        **kwargs: MONAI ``DiffusionModelUNet`` arguments.
    """

    def __init__(
        self,
        *,
        upsample_mode: str = MONAI_UPSAMPLE_MODE,
        time_embed_max_period: float = MONAI_TIME_EMBED_MAX_PERIOD,
        zero_init_attention_out: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if upsample_mode not in ("nearest", "trilinear"):
            raise ValueError(f"upsample_mode must be nearest or trilinear, got {upsample_mode!r}")
        self.upsample_mode = upsample_mode
        self.time_embed_max_period = float(time_embed_max_period)
        self.zero_init_attention_out = zero_init_attention_out
        self.checkpointing = "none"
        for up in self.upsamplers():
            up.mode = upsample_mode
        if zero_init_attention_out:
            for block in self.modules():
                if isinstance(block, SABlock) and isinstance(block.out_proj, nn.Linear):
                    nn.init.zeros_(block.out_proj.weight)
                    nn.init.zeros_(block.out_proj.bias)

    def upsamplers(self) -> list[nn.Upsample]:
        """The interpolation layers of the up path (one per up block except the last)."""
        found = []
        for block in self.up_blocks:
            inner = getattr(getattr(block, "upsampler", None), "upsample_non_trainable", None)
            if isinstance(inner, nn.Upsample):
                found.append(inner)
        return found

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        down_block_additional_residuals: tuple[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the network output for ``x`` at ``timesteps`` (``(B,)``)."""
        if any(
            a is not None
            for a in (context, class_labels, down_block_additional_residuals, mid_block_additional_residual)
        ):
            raise ValueError(
                "GliomaGenUNet is conditioned by concatenation only (no context/labels/residuals)"
            )
        t_emb = timestep_embedding(timesteps, self.block_out_channels[0], self.time_embed_max_period)
        emb = self.time_embed(t_emb.to(dtype=x.dtype))
        mode = self.checkpointing if self.training and torch.is_grad_enabled() else "none"
        h = self.conv_in(x)
        skips: list[torch.Tensor] = [h]
        downs: list[Any] = list(self.down_blocks)  # MONAI's blocks (untyped modules)
        ups: list[Any] = list(self.up_blocks)
        last = len(ups) - 1
        for level, down in enumerate(downs):
            for resnet in down.resnets:
                h = _res_block(resnet, h, None, emb, mode, nested=level < NESTED_LEVELS)
                skips.append(h)
            if down.downsampler is not None:
                h = down.downsampler(h, emb)  # saves its input, a skip tensor kept anyway
                skips.append(h)
        h = _segment(self.middle_block, mode != "none", h, emb)
        for i, up in enumerate(ups):
            for resnet in up.resnets:
                # pop: the skip is dropped as soon as it is used (inference keeps only the live ones)
                h = _res_block(resnet, h, skips.pop(), emb, mode, nested=last - i < NESTED_LEVELS)
            if up.upsampler is not None:
                h = _segment(up.upsampler, mode == "segments", h)
        out: torch.Tensor = _segment(self.out, mode == "segments", h)
        return out


#: activation checkpointing of :class:`GliomaGenUNet` (``none`` off; see :func:`enable_grad_checkpointing`)
CHECKPOINT_MODES = ("none", "blocks", "segments")


def _segment(module: nn.Module, active: bool, *args: torch.Tensor) -> torch.Tensor:
    """``module(*args)``, recomputed in backward when ``active`` (only the inputs are saved)."""
    if not active:
        out: torch.Tensor = module(*args)
        return out
    return cast(torch.Tensor, checkpoint(module, *args, use_reentrant=False))


#: ``segments``: res-blocks of this many top (full-resolution) levels recompute in two nested units
NESTED_LEVELS = 1


def _cat_res_block(
    block: DiffusionUNetResnetBlock, h: torch.Tensor, skip: torch.Tensor | None, emb: torch.Tensor
) -> torch.Tensor:
    out: torch.Tensor = block(h if skip is None else torch.cat([h, skip], dim=1), emb)
    return out


def _res_block(
    block: DiffusionUNetResnetBlock,
    h: torch.Tensor,
    skip: torch.Tensor | None,
    emb: torch.Tensor,
    mode: str,
    nested: bool = False,
) -> torch.Tensor:
    """One res-block (after concatenating the skip on the up path) under checkpointing ``mode``.

    ``blocks`` saves each res-block's input, the concatenation included (two tensors' worth on the up
    path). ``segments`` concatenates inside the recomputed segment, so only ``h`` is saved (the skip is
    held anyway); with ``nested`` the segment is itself two recomputed units (:func:`_nested_res_block`),
    so its backward holds one unit's activations at a time.
    """
    if mode == "segments":
        body = _nested_res_block if nested else _cat_res_block
        out: torch.Tensor = checkpoint(body, block, h, skip, emb, use_reentrant=False)
        return out
    x = h if skip is None else torch.cat([h, skip], dim=1)
    return _segment(block, mode == "blocks", x, emb)


def _nested_res_block(
    block: DiffusionUNetResnetBlock, h: torch.Tensor, skip: torch.Tensor | None, emb: torch.Tensor
) -> torch.Tensor:
    """MONAI's res-block forward, bit for bit, as two recomputed units (``conv1`` side, ``conv2`` side)."""
    a = checkpoint(_unit_in, block, h, skip, emb, use_reentrant=False)
    out: torch.Tensor = checkpoint(_unit_out, block, a, h, skip, use_reentrant=False)
    return out


def _unit_in(
    block: DiffusionUNetResnetBlock, h: torch.Tensor, skip: torch.Tensor | None, emb: torch.Tensor
) -> torch.Tensor:
    """``conv1(silu(norm1(cat(h, skip)))) + temb``; the norm runs per part when the parts hold whole groups
    (identical values: GroupNorm's statistics are per group), so the normalised concatenation is never held.
    """
    parts = [h] if skip is None else [h, skip]
    norm = block.norm1
    per_channel = norm.num_groups / norm.num_channels
    if len(parts) > 1 and all((p.shape[1] * per_channel).is_integer() for p in parts):
        acts, first = [], 0
        for p in parts:
            c = p.shape[1]
            weight = norm.weight[first : first + c] if norm.weight is not None else None
            bias = norm.bias[first : first + c] if norm.bias is not None else None
            normed = nn.functional.group_norm(p, int(c * per_channel), weight, bias, norm.eps)
            acts.append(block.nonlinearity(normed))
            first += c
        act = torch.cat(acts, dim=1)
    else:
        act = block.nonlinearity(norm(torch.cat(parts, dim=1) if skip is not None else h))
    temb = block.time_emb_proj(block.nonlinearity(emb))[:, :, None, None, None]
    out: torch.Tensor = block.conv1(act) + temb
    return out


def _unit_out(
    block: DiffusionUNetResnetBlock, a: torch.Tensor, h: torch.Tensor, skip: torch.Tensor | None
) -> torch.Tensor:
    """``skip_connection(cat(h, skip)) + conv2(silu(norm2(a)))``."""
    x = h if skip is None else torch.cat([h, skip], dim=1)
    out: torch.Tensor = block.skip_connection(x) + block.conv2(block.nonlinearity(block.norm2(a)))
    return out


def network_options(cfg: Config) -> dict[str, object]:
    """The three reference options of ``cfg.model`` (for summaries and provenance)."""
    m = cfg.model
    return {
        "upsample_mode": m.upsample_mode,
        "time_embed_max_period": m.time_embed_max_period,
        "zero_init_attention_out": m.zero_init_attention_out,
    }


def build_model(cfg: Config, device: torch.device | str | None = None) -> GliomaGenUNet:
    """The 3D denoiser for ``cfg`` (MONAI ``DiffusionModelUNet`` + the model options), optionally on ``meta``.

    Args:
        cfg: run configuration (``model`` section and the label map for the input channels).
        device: where to create the parameters; ``"meta"`` builds the paper network without memory.
    """
    m = cfg.model
    with torch.device(device) if device is not None else _nullcontext():
        net = GliomaGenUNet(
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
            upsample_mode=m.upsample_mode,
            time_embed_max_period=m.time_embed_max_period,
            zero_init_attention_out=m.zero_init_attention_out,
        )
    return net


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def enable_grad_checkpointing(net: GliomaGenUNet, mode: str = "segments") -> int:
    """Recompute activations in the backward pass (exact gradients; more time, much less memory).

    ``segments`` (the default): every res-block with the concatenation of its skip inside, the upsamplers
    and the output block are recomputed segments, so the saved tensors are one per segment boundary plus
    the skips. ``blocks``: every res-block alone (the concatenated input is saved). ``none``: off. The
    modules and state-dict keys do not change.

    Returns:
        the number of res-blocks recomputed (0 for ``none``).
    """
    if mode not in CHECKPOINT_MODES:
        raise ValueError(f"checkpointing mode must be one of {CHECKPOINT_MODES}, got {mode!r}")
    net.checkpointing = mode
    if mode == "none":
        return 0
    return sum(isinstance(m, DiffusionUNetResnetBlock) for m in net.modules())


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
    meta: Any = _meta_copy(net)
    hooks = []
    parts = [("conv_in", meta.conv_in)]
    parts += [(f"down_{i}", b) for i, b in enumerate(meta.down_blocks)]
    parts += [("middle", meta.middle_block)]
    parts += [(f"up_{i}", b) for i, b in enumerate(meta.up_blocks)]
    parts += [("out", meta.out)]
    for name, module in parts:

        def hook(_m: nn.Module, _inp: object, out: Any, name: str = name, module: nn.Module = module) -> None:
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
    """Parameters, FLOPs, the reference options and per-level shapes of the profile's network (meta device).

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
        **network_options(cfg),
        "forward_tflop": forward_flops(net, shape) / 1e12,
        "levels": level_shapes(net, shape),
    }
