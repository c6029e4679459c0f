"""``gliomagen import-weights``: the original's released checkpoint -> a project checkpoint.

The original (Med-DDPM code, guided-diffusion ``UNetModel``) saved ``torch.save({"step", "model", "ema"})``,
each entry the state dict of its ``GaussianDiffusion`` module: the schedule buffers (``betas``, ...,
``posterior_mean_coef3``; ``alphas`` too in GliomaGen's trainer) and the network under ``denoise_fn.``:

====================================  ===========================================================
original (``denoise_fn.`` + ...)       project (MONAI ``DiffusionModelUNet``)
====================================  ===========================================================
``time_embed.{0,2}``                   ``time_embed.{0,2}``
``input_blocks.0.0``                   ``conv_in.conv``
``input_blocks.k.0`` (res-block)       ``down_blocks.L.resnets.j`` (k counts res-blocks and downsamplers
                                       in registration order: level by level, ``num_res_blocks`` res-blocks
                                       then one downsampler except on the last level)
``input_blocks.k.0.op``                ``down_blocks.L.downsampler.op.conv``
``middle_block.0`` / ``.2``            ``middle_block.resnet_1`` / ``resnet_2``
``middle_block.1`` (attention)         ``middle_block.attention``: ``norm``; the conv1d ``qkv`` (3C, C, 1)
                                       split into ``attn.to_q/to_k/to_v`` (C, C); ``proj_out`` (C, C, 1)
                                       -> ``attn.out_proj`` (C, C)
``output_blocks.k.0`` (res-block)      ``up_blocks.U.resnets.i`` (levels reversed, ``num_res_blocks + 1``
                                       each)
``output_blocks.k.1.conv``             ``up_blocks.U.upsampler.postconv.conv`` (all but the last level)
``out.0`` / ``out.2``                  ``out.0`` / ``out.2.conv``
res-block ``in_layers.0/.2``,          ``norm1``, ``conv1.conv``, ``time_emb_proj``, ``norm2``,
``emb_layers.1``, ``out_layers.0/.3``, ``conv2.conv``, ``skip_connection.conv``
``skip_connection``
====================================  ===========================================================

The qkv split follows the original's head ordering: it builds its attention with
``use_new_attention_order=False`` (``QKVAttentionLegacy``), which reshapes the ``3C`` rows as
``(heads, 3, C / heads)`` -- per head, its q, k and v rows -- whereas the "new" order (``QKVAttention``) is
``(3, heads, C / heads)``. With the paper's single head both coincide; both are implemented, legacy is used.

Import is strict: every original key must be mapped, every project parameter filled, every shape equal to
the profile's network, every schedule buffer equal to the profile's schedule (float32 precision); the first
problem is named. The file is read with ``torch.load(weights_only=True)``. The written checkpoint has the
project's format (config hashes of the profile, so ``generate``/``fidelity`` treat it like a trained one), the
chosen weights (EMA by default) and an ``imported`` record: source file, its sha256 and step, which weights,
the mapping version; and ``input_orientation = "RAS"`` (see docs/original_weights.md).

A little over 400 lines on purpose: the key mapping in both directions (import, and the inverse that builds
checkpoints in the original's layout for the tests and the dry run), the schedule check and the strict
import are one contract, and the first quarter of the module is the mapping table above.
"""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gliomagen.config import Config
from gliomagen.diffusion.checkpoint import CheckpointError, safe_torch_load, save_checkpoint
from gliomagen.io import file_sha256

#: bump when the mapping changes (recorded in every imported checkpoint)
MAPPING_VERSION = "meddpm-unet-to-monai-v1"
PREFIX = "denoise_fn."
#: the orientation the original fed its masks in (``as_closest_canonical``)
ORIGINAL_ORIENTATION = "RAS"
#: GaussianDiffusion buffers in registration order; "alphas" exists in GliomaGen's trainer only
SCHEDULE_BUFFERS = (
    "betas",
    "alphas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "posterior_mean_coef3",
)
OPTIONAL_BUFFERS = {"alphas"}
_RESBLOCK = (
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1.conv"),
    ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2.conv"),
    ("skip_connection", "skip_connection.conv"),
)


class WeightsImportError(CheckpointError):
    """The source file is not the original's checkpoint for this profile's network."""


# ---------------------------------------------------------------------------------------------- mapping
def module_pairs(cfg: Config) -> list[tuple[str, str, str]]:
    """``(original module, project module, kind)`` in the original's registration order.

    Args:
        cfg: the profile (``model.channels`` and ``model.num_res_blocks`` give the block layout).
    """
    levels, blocks = len(cfg.model.channels), cfg.model.num_res_blocks
    pairs = [
        ("time_embed.0", "time_embed.0", "plain"),
        ("time_embed.2", "time_embed.2", "plain"),
        ("input_blocks.0.0", "conv_in.conv", "plain"),
    ]
    k = 1
    for level in range(levels):
        for j in range(blocks):
            pairs.append((f"input_blocks.{k}.0", f"down_blocks.{level}.resnets.{j}", "resblock"))
            k += 1
        if level != levels - 1:
            pairs.append((f"input_blocks.{k}.0.op", f"down_blocks.{level}.downsampler.op.conv", "plain"))
            k += 1
    pairs += [
        ("middle_block.0", "middle_block.resnet_1", "resblock"),
        ("middle_block.1", "middle_block.attention", "attention"),
        ("middle_block.2", "middle_block.resnet_2", "resblock"),
    ]
    k = 0
    for up in range(levels):
        for i in range(blocks + 1):
            pairs.append((f"output_blocks.{k}.0", f"up_blocks.{up}.resnets.{i}", "resblock"))
            if up != levels - 1 and i == blocks:
                pairs.append(
                    (f"output_blocks.{k}.1.conv", f"up_blocks.{up}.upsampler.postconv.conv", "plain")
                )
            k += 1
    pairs += [("out.0", "out.0", "plain"), ("out.2", "out.2.conv", "plain")]
    return pairs


def tensor_pairs(cfg: Config, project_keys: set[str]) -> list[tuple[str, str, str]]:
    """``(original key, project key, transform)`` for every tensor, original registration order.

    ``transform``: ``copy``; ``squeeze`` (conv1d ``(C, C, 1)`` -> linear ``(C, C)``); ``q``/``k``/``v``
    (one third of the conv1d ``qkv``, several project keys read the same original key).
    """
    out: list[tuple[str, str, str]] = []
    for orig, proj, kind in module_pairs(cfg):
        if kind == "plain":
            subs = [("", "")]
        elif kind == "resblock":
            subs = [(f".{o}", f".{p}") for o, p in _RESBLOCK if f"{proj}.{p}.weight" in project_keys]
        else:
            subs = []
            for suffix in ("weight", "bias"):
                out.append((f"{orig}.norm.{suffix}", f"{proj}.norm.{suffix}", "copy"))
            for suffix in ("weight", "bias"):
                for part in "qkv":
                    out.append((f"{orig}.qkv.{suffix}", f"{proj}.attn.to_{part}.{suffix}", part))
            out.append((f"{orig}.proj_out.weight", f"{proj}.attn.out_proj.weight", "squeeze"))
            out.append((f"{orig}.proj_out.bias", f"{proj}.attn.out_proj.bias", "copy"))
        for o, p in subs:
            for suffix in ("weight", "bias"):
                out.append((f"{orig}{o}.{suffix}", f"{proj}{p}.{suffix}", "copy"))
    return out


def attention_heads(cfg: Config) -> int:
    """Heads of the middle-block attention (the paper: one)."""
    return cfg.model.channels[-1] // cfg.model.num_head_channels


def split_qkv(qkv: torch.Tensor, heads: int, order: str = "legacy") -> tuple[torch.Tensor, ...]:
    """The conv1d ``qkv`` weight ``(3C, C, 1)`` or bias ``(3C,)`` -> q, k, v as linear ``(C, C)`` / ``(C,)``.

    Args:
        qkv: the original's tensor.
        heads: number of attention heads.
        order: ``legacy`` (rows ``(heads, 3, C/heads)``, the original's) or ``new`` (``(3, heads, C/heads)``).
    """
    t = qkv.squeeze(-1) if qkv.ndim == 3 else qkv
    c3, rest = t.shape[0], t.shape[1:]
    c = c3 // 3
    ch = c // heads
    if order == "legacy":
        parts = t.reshape(heads, 3, ch, *rest).unbind(1)
    elif order == "new":
        parts = t.reshape(3, heads, ch, *rest).unbind(0)
    else:
        raise ValueError(f"attention order must be legacy or new, got {order!r}")
    return tuple(p.reshape(c, *rest).contiguous() for p in parts)


def join_qkv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, order: str = "legacy"
) -> torch.Tensor:
    """Inverse of :func:`split_qkv` (without the conv1d's trailing axis)."""
    c, rest = q.shape[0], q.shape[1:]
    ch = c // heads
    parts = [p.reshape(heads, ch, *rest) for p in (q, k, v)]
    stacked = torch.stack(parts, dim=1) if order == "legacy" else torch.stack(parts, dim=0)
    return stacked.reshape(3 * c, *rest).contiguous()


def original_to_project(
    original: Mapping[str, torch.Tensor],
    cfg: Config,
    template: Mapping[str, torch.Tensor],
    source: str = "the checkpoint",
    order: str = "legacy",
) -> OrderedDict[str, torch.Tensor]:
    """Map the original's network tensors (keys without ``denoise_fn.``) to the project's state dict.

    Args:
        original: the original's network state dict.
        cfg: the profile (layout of the network).
        template: the project network's state dict (the shapes every tensor must have).
        source: named in error messages.
        order: the qkv head ordering (the original: ``legacy``).

    Raises:
        WeightsImportError: naming the first missing key, the first key of a wrong shape or the first unused key.
    """
    pairs = tensor_pairs(cfg, set(template))
    mapped = {p for _, p, _ in pairs}
    if mapped != set(template):  # a layout this mapping does not know (a bug, not a user error)
        missing = sorted(set(template) - mapped)[:3]
        raise RuntimeError(f"mapping {MAPPING_VERSION} does not cover project keys {missing}")
    heads = attention_heads(cfg)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for orig, proj, how in pairs:
        if orig not in original:
            raise WeightsImportError(
                f"{source}: key {PREFIX}{orig} is missing (needed for {proj} of the profile's network)"
            )
        t = original[orig]
        want = tuple(template[proj].shape)
        expected: tuple[int, ...]
        if how in ("q", "k", "v"):
            expected = (3 * want[0], *want[1:], 1) if len(want) == 2 else (3 * want[0],)
        elif how == "squeeze":
            expected = (*want, 1)
        else:
            expected = want
        if tuple(t.shape) != expected:
            raise WeightsImportError(
                f"{source}: key {PREFIX}{orig} has shape {tuple(t.shape)}, the profile's network needs "
                f"{expected} (for {proj}); the weights belong to another network configuration"
            )
        if how in ("q", "k", "v"):
            value = split_qkv(t, heads, order)["qkv".index(how)]
        elif how == "squeeze":
            value = t.squeeze(-1)
        else:
            value = t
        out[proj] = value.detach().to(template[proj].dtype).clone()
    used = {o for o, _, _ in pairs}
    extra = [k for k in original if k not in used]
    if extra:
        raise WeightsImportError(
            f"{source}: key {PREFIX}{extra[0]} is not part of the profile's network (unused)"
        )
    return OrderedDict((k, out[k]) for k in template)  # the project's own key order


def project_to_original(
    state: Mapping[str, torch.Tensor], cfg: Config, order: str = "legacy"
) -> OrderedDict[str, torch.Tensor]:
    """The inverse mapping: a project state dict -> the original's network keys (no prefix), its order.

    Used by the tests (a random project network written in the original's layout must import back bit for
    bit) and by the paper dry-run benchmark.
    """
    heads = attention_heads(cfg)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for orig, proj, how in tensor_pairs(cfg, set(state)):
        if how in ("q", "k", "v"):
            if how == "q":
                base = proj.rsplit(".to_q.", 1)
                q, k, v = (state[f"{base[0]}.to_{p}.{base[1]}"] for p in "qkv")
                joined = join_qkv(q, k, v, heads, order)
                out[orig] = joined.unsqueeze(-1) if joined.ndim == 2 else joined
        elif how == "squeeze":
            out[orig] = state[proj].unsqueeze(-1).clone()
        else:
            out[orig] = state[proj].clone()
    return out


# ------------------------------------------------------------------------------------------ schedule
def schedule_buffers(cfg: Config, with_alphas: bool = True) -> OrderedDict[str, torch.Tensor]:
    """The ``GaussianDiffusion`` buffers of the profile's schedule (float64 formulas, stored as float32)."""
    from gliomagen.diffusion.schedule import betas64

    b = betas64(cfg)
    a = 1.0 - b
    abar = torch.cumprod(a, 0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    post_var = b * (1.0 - prev) / (1.0 - abar)
    values = {
        "betas": b,
        "alphas": a,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": abar.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - abar).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / abar).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1).sqrt(),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
        "posterior_mean_coef1": b * prev.sqrt() / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - prev) * a.sqrt() / (1.0 - abar),
        "posterior_mean_coef3": 1.0 - (1.0 - prev) * a.sqrt() / (1.0 - abar),
    }
    return OrderedDict(
        (k, values[k].float()) for k in SCHEDULE_BUFFERS if with_alphas or k not in OPTIONAL_BUFFERS
    )


def check_schedule(buffers: Mapping[str, torch.Tensor], cfg: Config, source: str) -> None:
    """Every schedule buffer of the source must equal the profile's (shape, then values at float32 precision)."""
    ours = schedule_buffers(cfg, with_alphas=True)
    for name in SCHEDULE_BUFFERS:
        if name not in buffers:
            if name in OPTIONAL_BUFFERS:
                continue
            raise WeightsImportError(
                f"{source}: schedule buffer {name} is missing (not a GaussianDiffusion state dict)"
            )
        got, want = buffers[name], ours[name]
        if tuple(got.shape) != tuple(want.shape):
            raise WeightsImportError(
                f"{source}: schedule buffer {name} has shape {tuple(got.shape)}, the profile's schedule "
                f"{tuple(want.shape)} (diffusion.timesteps={cfg.diffusion.timesteps})"
            )
        finite = torch.isfinite(want)
        if not torch.allclose(got.double()[finite], want.double()[finite], rtol=1e-4, atol=1e-6):
            worst = int(((got.double() - want.double()).abs() * finite).argmax())
            raise WeightsImportError(
                f"{source}: schedule buffer {name} differs from the profile's {cfg.diffusion.schedule} schedule "
                f"(index {worst}: {float(got[worst]):.6g} vs {float(want[worst]):.6g}); check diffusion.*"
            )


# ------------------------------------------------------------------------------------ checkpoint files
def original_checkpoint(
    model: Mapping[str, torch.Tensor],
    cfg: Config,
    step: int,
    ema: Mapping[str, torch.Tensor] | None = None,
    with_alphas: bool = True,
    order: str = "legacy",
) -> dict[str, Any]:
    """A checkpoint in the original's layout built from project state dicts (the inverse of the import).

    ``{"step", "model", "ema"}``, each a ``GaussianDiffusion`` state dict: schedule buffers first (they are
    the module's own buffers), then the network under ``denoise_fn.`` in the original's registration order.

    Args:
        model: project network state dict for ``"model"``.
        cfg: the profile.
        step: training step to record.
        ema: project state dict for ``"ema"`` (default: ``model``).
        with_alphas: include the ``alphas`` buffer (GliomaGen's trainer; Med-DDPM's has none).
        order: qkv head ordering.
    """

    def diffusion_state(state: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = OrderedDict(schedule_buffers(cfg, with_alphas))
        for k, v in project_to_original(state, cfg, order).items():
            out[PREFIX + k] = v
        return out

    return {"step": int(step), "model": diffusion_state(model), "ema": diffusion_state(ema or model)}


def import_weights(
    src: str | Path, dst: str | Path, cfg: Config, which: str = "ema", order: str = "legacy"
) -> dict[str, Any]:
    """Convert the original's checkpoint ``src`` into a project checkpoint ``dst`` for profile ``cfg``.

    Args:
        src: the original's ``.pt`` file (``{"step", "model", "ema"}``).
        dst: where to write the project checkpoint (atomically).
        cfg: the profile whose network the weights must fit (``paper``).
        which: ``ema`` (default, what the original sampled with) or ``model``.
        order: qkv head ordering of the source (the original: ``legacy``).

    Returns:
        the ``imported`` record written into the checkpoint.

    Raises:
        CheckpointError: unreadable or unsafe file; WeightsImportError: not the original's layout for this network.
    """
    from gliomagen.diffusion.network import build_model, network_options

    src, dst = Path(src), Path(dst)
    if which not in ("ema", "model"):
        raise ValueError(f"--which must be ema or model, got {which!r}")
    raw = safe_torch_load(src)
    if not isinstance(raw, Mapping) or which not in raw:
        found = sorted(map(str, raw)) if isinstance(raw, Mapping) else type(raw).__name__
        raise WeightsImportError(
            f"{src} is not the original's checkpoint: expected a dict with keys step, model, ema; found {found}"
        )
    state = raw[which]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsImportError(f"{src}: entry {which!r} is not a state dict of tensors")
    step = raw.get("step", -1)
    step = int(step.item()) if isinstance(step, torch.Tensor) else int(step)
    net_state = {k.removeprefix(PREFIX): v for k, v in state.items() if k.startswith(PREFIX)}
    buffers = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    unknown = [k for k in buffers if k not in SCHEDULE_BUFFERS]
    if unknown:
        raise WeightsImportError(
            f"{src}: key {unknown[0]} is neither a schedule buffer nor under {PREFIX} (unused)"
        )
    check_schedule(buffers, cfg, str(src))
    template = build_model(cfg, device="meta").state_dict()
    mapped = original_to_project(net_state, cfg, template, source=str(src), order=order)
    net = build_model(cfg)
    net.load_state_dict(mapped, strict=True)  # a last check of keys and shapes by torch itself
    record = {
        "source_file": src.name,
        "source_sha256": file_sha256(src),
        "source_step": step,
        "which": which,
        "mapping_version": MAPPING_VERSION,
        "attention_order": order,
        "input_orientation": ORIGINAL_ORIENTATION,
        "network_options": network_options(cfg),
        "tensors": len(mapped),
        "parameters": int(sum(v.numel() for v in mapped.values())),
    }
    save_checkpoint(
        dst,
        cfg,
        step,
        model=mapped,
        ema={f"module.{k}": v for k, v in mapped.items()},
        imported=json.dumps(record, sort_keys=True),
        input_orientation=ORIGINAL_ORIENTATION,
    )
    return record


def run_cli(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    """``gliomagen import-weights SRC --out DST [--profile paper] [--which ema|model]``."""
    record = import_weights(args.src, args.out, cfg, which=args.which)
    print(
        f"imported {record['which']} weights of {args.src} (step {record['source_step']}, "
        f"{record['parameters']:,} parameters, sha256 {record['source_sha256'][:12]}) -> {args.out}\n"
        f"use it with: gliomagen generate --profile {cfg.profile} --set generate.checkpoint={args.out} "
        f"(the original's x0 clamp: --set generate.clip_range=[-1,1])"
    )
    return record
