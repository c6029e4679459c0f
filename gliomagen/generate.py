"""Generation (``gliomagen generate``): 4-modality volumes from masks with the EMA weights of a checkpoint.

Two sets of masks are sampled (docs/method.md):

* ``val``: every validation mask (``<run>/prepared/val``) into ``<run>/synthetic/val/<id>/`` (same id as the
  real case), for the fidelity metrics and the qualitative figure;
* ``synthetic``: the accepted augmented masks (at most ``generate.n_synthetic``, round 1 first, so 1062 of
  2124 is the paper's "one round") into ``<run>/synthetic/train/<aug_id>/``.

Each output folder uses BraTS naming; the ``-seg`` file is the conditioning mask, every file has the mask's
affine, and images are clamped to [0, 1] (the original wrote unclamped values and flipped at evaluation).

Reproducibility and scale-out: every volume draws its noise from its own generator seeded by
``(generate.seed, id)``, so a volume does not depend on sharding or resuming, and on batching only up to
floating-point rounding: at most :data:`BATCH_TOLERANCE` (1e-3 on the [0, 1] scale) between batch sizes.
Measured (tiny nets, 16^3 and 24^3, CPU, 1-2 threads, issue 13): batch 1 vs 4 identical for DDIM and
DPM-Solver++ (both run the same batched loop; before, DPM-Solver++ batch 1 took the sampler's own loop and
differed by 7.9e-7); the ancestral DDPM runs volume by volume anyway. Elsewhere the convolution kernels
chosen for different batch sizes may round differently (issue 13 reported up to 3e-4). ``--shard i/n``
(or ``RANK``/``WORLD_SIZE`` under ``torchrun``) takes every n-th mask; each shard writes its own manifest part
(``synthetic/manifest_parts/``) and the parts are merged into ``synthetic/manifest.csv``. Complete outputs
with a manifest row for the same checkpoint, sampler, steps and seed are skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from gliomagen.cases import Case, is_complete, load_mask, modality_path, write_case
from gliomagen.config import MODALITIES, Config
from gliomagen.diffusion.orientation import sample_oriented
from gliomagen.errors import InputError
from gliomagen.io import provenance, write_csv, write_json
from gliomagen.locks import run_lock

log = logging.getLogger(__name__)

#: the most a generated voxel may change with the batch size (see the module docstring)
BATCH_TOLERANCE = 1e-3

MANIFEST_COLUMNS = [
    "id",
    "split",
    "source_id",
    "source_mask",
    "sampler",
    "steps",
    "seed",
    "checkpoint",
    "checkpoint_sha256",
    "checkpoint_step",
    "seconds",
    "batch_size",
    "clamped_fraction",
    "device",
    "shard",
    "config_hash",
    "finished_at",
]
#: what must match for an existing volume to count as done
IDENTITY = ["sampler", "steps", "seed", "checkpoint_sha256"]


# ------------------------------------------------------------------------------------------------ jobs
@dataclass(frozen=True)
class Job:
    """One volume to generate.

    Args:
        id: output id (real case id for ``val``, ``aug_id`` for ``train``).
        split: ``val`` or ``train`` (the synthetic training set).
        mask_path: the conditioning mask.
        source_id: the real case the mask comes from.
    """

    id: str
    split: str
    mask_path: Path
    source_id: str


def volume_seed(base_seed: int, volume_id: str) -> int:
    """The noise seed of one volume: a 63-bit integer from ``(generate.seed, id)``, equal in every process."""
    digest = hashlib.sha256(f"{base_seed}:{volume_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def val_jobs(cfg: Config) -> list[Job]:
    """One job per usable validation case (sorted by id)."""
    from gliomagen.data.prepare import usable_cases

    return [Job(d.name, "val", modality_path(d, "seg"), d.name) for d in usable_cases(cfg, "val")]


def synthetic_jobs(cfg: Config) -> list[Job]:
    """Accepted augmented masks, round 1 first then by id, at most ``generate.n_synthetic``."""
    from gliomagen.augment import read_manifest

    frame = read_manifest(cfg)
    if frame.empty:
        raise FileNotFoundError(
            f"no augmentation manifest at {cfg.paths.augmented / 'manifest.csv'}: run `gliomagen augment` first"
        )
    accepted = frame[frame["status"] == "accepted"].copy()
    accepted["round"] = accepted["round"].astype(int)
    accepted = accepted.sort_values(["round", "aug_id"])
    if cfg.generate.n_synthetic is not None:
        if cfg.generate.n_synthetic > len(accepted):
            log.warning(
                "generate.n_synthetic=%d but only %d augmented masks were accepted; generating all of them",
                cfg.generate.n_synthetic,
                len(accepted),
            )
        accepted = accepted.head(cfg.generate.n_synthetic)
    root = cfg.paths.augmented
    return [
        Job(r.aug_id, "train", root / r.aug_id / f"{r.aug_id}-seg.nii.gz", r.source_id)
        for r in accepted.itertuples()
    ]


def all_jobs(cfg: Config, which: str) -> list[Job]:
    """The ordered job list for ``which`` in ``val``, ``synthetic`` or ``all`` (validation first)."""
    if which not in ("val", "synthetic", "all"):
        raise ValueError(f"which must be val, synthetic or all, got {which!r}")
    jobs: list[Job] = []
    if which in ("val", "all"):
        jobs += val_jobs(cfg)
    if which in ("synthetic", "all"):
        jobs += synthetic_jobs(cfg)
    return jobs


def shard_jobs(jobs: Sequence[Job], shard: tuple[int, int]) -> list[Job]:
    """Every n-th job starting at i (round-robin keeps shards balanced across val and synthetic)."""
    i, n = shard
    return list(jobs[i::n])


class ShardError(InputError, ValueError):
    """A malformed ``--shard`` value (the CLI exits with code 2 and the message)."""


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ``None`` stays ``None``.

    Raises:
        ShardError: not two integers separated by ``/``, or ``i`` outside ``0..n-1``.
    """
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ShardError(f"--shard must look like i/n with integers (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ShardError(f"--shard {text}: shards are numbered from 0, so i must be in 0..n-1 (0 <= i < n)")
    return i, n


def torchrun_shard() -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when launched by ``torchrun`` (or a scheduler that sets them), else ``None``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def output_dir(cfg: Config, job: Job) -> Path:
    return cfg.paths.synthetic / job.split / job.id


# --------------------------------------------------------------------------------------- the sampling
@dataclass
class SamplingSetup:
    """Everything needed to turn masks into images.

    Args:
        model: the EMA denoiser in eval mode.
        sampler: object with ``.sample(model, condition, generator=None, progress=False)`` returning
            ``[B, 4, X, Y, Z]`` in [0, 1] (``generator`` may be a list, one per batch element).
        encode: mask batch ``(B, X, Y, Z)`` -> conditioning ``(B, C, X, Y, Z)``.
        sampler_name: recorded in the manifest.
        steps: sampling steps, recorded in the manifest.
        checkpoint: ``best``, ``last`` or a path (recorded).
        checkpoint_sha256: of the checkpoint file (recorded; part of the resume identity).
        checkpoint_step: training step of the checkpoint.
        device: where the model runs.
        input_orientation: array orientation the weights expect (``"RAS"`` for the original's imported
            weights, ``None`` for weights trained here); masks are reoriented for the network and the
            images turned back, so outputs keep each mask's geometry.
    """

    model: torch.nn.Module
    sampler: Any
    encode: Callable[[torch.Tensor], torch.Tensor]
    sampler_name: str
    steps: int
    checkpoint: str
    checkpoint_sha256: str
    checkpoint_step: int
    device: torch.device
    input_orientation: str | None = None


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> the local rank's GPU if there is one, else CPU; anything else is passed to torch."""
    if spec != "auto":
        return torch.device(spec)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def load_setup(cfg: Config, sampler: str | None = None, steps: int | None = None) -> SamplingSetup:
    """Load the EMA weights of ``generate.checkpoint`` and build the configured sampler.

    Args:
        cfg: run configuration.
        sampler: ``ddpm``, ``ddim`` or ``dpmpp`` (default ``generate.sampler``).
        steps: sampling steps (default ``generate.steps``).
    """
    from gliomagen.diffusion.checkpoint import load_for_sampling
    from gliomagen.diffusion.network import encode_mask
    from gliomagen.diffusion.samplers import make_sampler

    device = resolve_device(cfg.generate.device)
    name = sampler or cfg.generate.sampler
    # the ancestral DDPM always runs all T steps; --sampler ddpm without --steps means exactly that
    n_steps = steps or (cfg.diffusion.timesteps if name == "ddpm" else cfg.generate.steps)
    model, meta = load_for_sampling(cfg, cfg.generate.checkpoint, device=device)
    return SamplingSetup(
        model=model,
        sampler=make_sampler(cfg, name, n_steps),
        encode=lambda m: encode_mask(m, cfg),
        sampler_name=name,
        steps=n_steps,
        checkpoint=str(cfg.generate.checkpoint),
        checkpoint_sha256=str(meta["sha256"]),
        checkpoint_step=int(meta["step"]),
        device=device,
        input_orientation=meta.get("input_orientation"),
    )


def _deterministic(sampler: Any) -> bool:
    """Whether the sampler draws noise only once, at the start (DDIM with eta = 0, DPM-Solver++)."""
    name = getattr(sampler, "name", None)
    eta = getattr(getattr(sampler, "backend", None), "eta", None)
    return name == "dpmpp" or (name == "ddim" and not eta)


def _batched_sample(
    sampler: Any, model: torch.nn.Module, condition: torch.Tensor, generators: list
) -> torch.Tensor:
    """The sampler's own reverse loop for a batch, with one generator per volume for the initial noise.

    Only for deterministic samplers, whose single random draw is ``x_T``: drawing ``x_T`` volume by volume
    gives exactly the noise of a batch-of-one call, so a volume does not depend on its batch-mates. Batching
    matters on a CPU: PyTorch sends small batch-1 3D convolutions to its slow reference kernel and batches
    of 2+ to oneDNN (measured here: a batch of 2 costs the same wall time as a batch of 1).
    """
    device = next(model.parameters()).device
    cond = condition.to(device=device, dtype=torch.float32)
    shape = (1, sampler.image_channels, *cond.shape[2:])
    x = torch.cat([torch.randn(shape, generator=g, device=device) for g in generators])
    sampler.backend.reset()
    for t in sampler.timesteps:
        t_batch = torch.full((x.shape[0],), t, device=device, dtype=torch.long)
        eps = model(torch.cat([x, cond], dim=1), timesteps=t_batch).float()
        x, _ = sampler.backend.step(eps, t, x, None)
    return x.clamp(0.0, 1.0)


def sample_batch(setup: SamplingSetup, masks: np.ndarray, seeds: Sequence[int]) -> tuple[np.ndarray, float]:
    """Sample one batch; each volume draws its noise from its own generator seeded by its volume seed.

    Batched in one network call per step when the sampler takes a list of generators
    (``accepts_generator_list``, the diffusers convention) or is deterministic after its initial noise
    (:func:`_batched_sample`); otherwise (ancestral DDPM, DDIM with eta > 0) volume by volume, because one
    generator shared by a batch would make each volume depend on its batch-mates. Batched and one-by-one
    results agree up to floating-point rounding of the convolution kernels (:data:`BATCH_TOLERANCE`).

    Returns:
        images ``(B, 4, X, Y, Z)`` float32 clamped to [0, 1] and the fraction of values that were outside.
    """
    condition = setup.encode(torch.as_tensor(masks)).to(setup.device)
    # generators live on the model's device type: samples reproduce for a seed on one device type
    generators = [torch.Generator(device=setup.device).manual_seed(int(s)) for s in seeds]
    with torch.inference_mode():
        if len(generators) > 1 and getattr(setup.sampler, "accepts_generator_list", False):
            out = setup.sampler.sample(setup.model, condition, generator=generators, progress=False)
        elif _deterministic(setup.sampler):  # batch of one too: the same loop, so the same rounding
            out = _batched_sample(setup.sampler, setup.model, condition, generators)
        else:
            out = torch.cat(
                [
                    setup.sampler.sample(setup.model, condition[k : k + 1], generator=g, progress=False)
                    for k, g in enumerate(generators)
                ]
            )
    out = out.detach().float().cpu()
    if out.shape[1] != len(MODALITIES) or tuple(out.shape[2:]) != masks.shape[1:]:
        raise RuntimeError(
            f"sampler returned shape {tuple(out.shape)}, expected (B, {len(MODALITIES)}, *{masks.shape[1:]})"
        )
    outside = float(((out < 0) | (out > 1)).float().mean())
    return out.clamp_(0, 1).numpy().astype(np.float32), outside


# ------------------------------------------------------------------------------------------- manifest
def _parts_dir(cfg: Config) -> Path:
    return cfg.paths.synthetic / "manifest_parts"


def _part_path(cfg: Config, shard: tuple[int, int]) -> Path:
    return _parts_dir(cfg) / f"shard-{shard[0]:04d}-of-{shard[1]:04d}.csv"


def _read_csv(path: Path) -> pd.DataFrame:
    text = [
        "id",
        "split",
        "source_id",
        "source_mask",
        "sampler",
        "seed",
        "checkpoint",
        "checkpoint_sha256",
        "shard",
    ]
    return pd.read_csv(path, dtype=dict.fromkeys(text, str), keep_default_na=False)


def read_manifest(cfg: Config) -> pd.DataFrame:
    """Every generated volume's latest row: ``manifest.csv`` merged with all shard parts.

    Rows whose output folder is not complete are dropped; for an id listed twice the latest wins.
    """
    frames = [
        _read_csv(p)
        for p in [cfg.paths.synthetic / "manifest.csv", *sorted(_parts_dir(cfg).glob("*.csv"))]
        if p.is_file()
    ]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    frame = pd.concat(frames, ignore_index=True).sort_values("finished_at", kind="stable")
    frame = frame.drop_duplicates(["split", "id"], keep="last")
    complete = [
        is_complete(cfg.paths.synthetic / s / i) for s, i in zip(frame["split"], frame["id"], strict=True)
    ]
    frame = frame[complete].sort_values(["split", "id"], ascending=[False, True])
    return frame.reindex(columns=MANIFEST_COLUMNS).reset_index(drop=True)


def merge_manifest(cfg: Config) -> pd.DataFrame:
    """Write the merged ``synthetic/manifest.csv`` (atomic) and return it."""
    frame = read_manifest(cfg)
    write_csv(cfg.paths.synthetic / "manifest.csv", frame)
    return frame


def _is_done(
    job: Job, cfg: Config, known: dict[tuple[str, str], dict[str, Any]], identity: dict[str, Any]
) -> bool:
    row = known.get((job.split, job.id))
    if row is None or not is_complete(output_dir(cfg, job)):
        return False
    # steps may come back from CSV as int or float; seeds are kept as text (63-bit integers)
    return all(
        (int(float(row[k])) == int(identity[k])) if k == "steps" else str(row[k]) == str(identity[k])
        for k in IDENTITY
    )


# ------------------------------------------------------------------------------------------- the stage
def _load_job_mask(job: Job, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    if not job.mask_path.is_file():
        raise FileNotFoundError(f"{job.mask_path}: conditioning mask is missing")
    try:
        mask, affine = load_mask(job.mask_path.parent)
    except Exception as exc:  # nibabel/gzip errors do not always name the file
        raise ValueError(f"{job.mask_path}: cannot read the mask ({type(exc).__name__}: {exc})") from exc
    known = {lab.value for lab in cfg.data.labels}
    unknown = sorted(set(np.unique(mask).tolist()) - known)
    if mask.ndim != 3 or unknown:
        problem = (
            f"shape {mask.shape} is not 3D"
            if mask.ndim != 3
            else f"label values {unknown} not in data.labels"
        )
        raise ValueError(f"{job.mask_path}: {problem}")
    return mask, affine


def _batches(
    jobs: list[Job], cfg: Config, size: int, errors: list[str]
) -> Iterator[list[tuple[Job, np.ndarray, np.ndarray]]]:
    """Consecutive groups of at most ``size`` loaded masks of one shape (loaded lazily, bad masks reported)."""
    batch: list[tuple[Job, np.ndarray, np.ndarray]] = []
    for job in jobs:
        try:
            mask, affine = _load_job_mask(job, cfg)
        except Exception as exc:  # noqa: BLE001 -- a bad mask is reported, the others go on
            errors.append(str(exc))
            log.error("%s", exc)
            continue
        if batch and (len(batch) == size or batch[0][1].shape != mask.shape):
            yield batch
            batch = []
        batch.append((job, mask, affine))
    if batch:
        yield batch


def generate(
    cfg: Config,
    which: str = "all",
    shard: tuple[int, int] | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    setup: SamplingSetup | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the volumes of ``which`` for one shard; resumable.

    Args:
        cfg: run configuration.
        which: ``val``, ``synthetic`` or ``all``.
        shard: ``(i, n)``; default: ``torchrun``'s ``(RANK, WORLD_SIZE)`` if set, else ``(0, 1)``.
        sampler: sampler name (default ``generate.sampler``).
        steps: sampling steps (default ``generate.steps``).
        setup: a ready :class:`SamplingSetup` (default: :func:`load_setup` from the checkpoint).
        limit: only the first ``limit`` volumes of this shard (a quick look).
        progress: show a tqdm bar.

    Returns:
        summary: counts generated/skipped/failed, seconds per volume, the errors.
    """
    shard = shard or torchrun_shard() or (0, 1)
    # one process per shard; partial files of an interrupted run of any shard are removed
    with run_lock(cfg.paths.root, f"generate-shard-{shard[0]}-of-{shard[1]}", clean=[cfg.paths.synthetic]):
        return _generate_shard(cfg, which, shard, sampler, steps, setup, limit, progress)


def _generate_shard(
    cfg: Config,
    which: str,
    shard: tuple[int, int],
    sampler: str | None,
    steps: int | None,
    setup: SamplingSetup | None,
    limit: int | None,
    progress: bool,
) -> dict[str, Any]:
    jobs = shard_jobs(all_jobs(cfg, which), shard)
    if limit is not None:
        jobs = jobs[:limit]
    setup = setup or load_setup(cfg, sampler, steps)
    base = {
        "sampler": setup.sampler_name,
        "steps": setup.steps,
        "checkpoint": setup.checkpoint,
        "checkpoint_sha256": setup.checkpoint_sha256,
        "checkpoint_step": setup.checkpoint_step,
        "device": str(setup.device),
        "shard": f"{shard[0]}/{shard[1]}",
        "config_hash": cfg.hash,
    }
    existing = read_manifest(cfg)
    known = {(r["split"], r["id"]): r for r in existing.to_dict("records")}
    part_rows = {(r["split"], r["id"]): r for r in _existing_part(cfg, shard)}
    todo = [
        j for j in jobs if not _is_done(j, cfg, known, {**base, "seed": volume_seed(cfg.generate.seed, j.id)})
    ]
    skipped = len(jobs) - len(todo)
    log.info("generation shard %d/%d: %d volumes, %d already done", shard[0], shard[1], len(jobs), skipped)
    errors: list[str] = []
    seconds: list[float] = []
    bar = tqdm(total=len(todo), desc=f"generate {shard[0]}/{shard[1]}", unit="vol", disable=not progress)
    for batch in _batches(todo, cfg, cfg.generate.batch_size, errors):
        seeds = [volume_seed(cfg.generate.seed, job.id) for job, _, _ in batch]
        t0 = time.perf_counter()
        masks, affines = np.stack([m for _, m, _ in batch]), [a for _, _, a in batch]
        # imported original weights expect RAS arrays: reoriented there and back (sample_oriented)
        images, outside = sample_oriented(sample_batch, setup, masks, affines, seeds)
        per_volume = (time.perf_counter() - t0) / len(batch)
        for (job, mask, affine), image, seed in zip(batch, images, seeds, strict=True):
            write_case(output_dir(cfg, job).parent, Case(job.id, image, mask, affine), cfg.hash)
            part_rows[(job.split, job.id)] = {
                **base,
                "id": job.id,
                "split": job.split,
                "source_id": job.source_id,
                "source_mask": _relative(job.mask_path, cfg.paths.root),
                "seed": seed,
                "seconds": round(per_volume, 4),
                "batch_size": len(batch),
                "clamped_fraction": outside,
                "finished_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            }
            seconds.append(per_volume)
        _write_part(cfg, shard, part_rows)  # after every batch: an interruption loses one batch at most
        bar.update(len(seconds) + len(errors) - bar.n)  # bad masks skipped while batching count as done
        bar.set_postfix(s_per_vol=f"{per_volume:.1f}")
    bar.close()
    frame = merge_manifest(cfg)
    summary = {
        "shard": f"{shard[0]}/{shard[1]}",
        "volumes": len(jobs),
        "generated": len(seconds),
        "skipped": skipped,
        "failed": len(errors),
        "errors": errors,
        "sampler": setup.sampler_name,
        "steps": setup.steps,
        "seconds_per_volume": float(np.mean(seconds)) if seconds else None,
        "manifest_rows": len(frame),
        "provenance": provenance(cfg.hash, checkpoint_sha256=setup.checkpoint_sha256),
    }
    suffix = "" if shard == (0, 1) else f"_shard-{shard[0]}-of-{shard[1]}"
    write_json(cfg.paths.metrics / f"generation{suffix}.json", summary)
    return summary


def _existing_part(cfg: Config, shard: tuple[int, int]) -> list[dict[str, Any]]:
    path = _part_path(cfg, shard)
    return _read_csv(path).to_dict("records") if path.is_file() else []


def _write_part(cfg: Config, shard: tuple[int, int], rows: dict[tuple[str, str], dict[str, Any]]) -> None:
    write_csv(_part_path(cfg, shard), pd.DataFrame(list(rows.values())).reindex(columns=MANIFEST_COLUMNS))


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def run_cli(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    """``gliomagen generate [--which val|synthetic|all] [--sampler S] [--steps N] [--shard i/n]``."""
    summary = generate(
        cfg,
        which=getattr(args, "which", "all") or "all",
        shard=parse_shard(getattr(args, "shard", None)),
        sampler=getattr(args, "sampler", None),
        steps=getattr(args, "steps", None),
    )
    rate = summary["seconds_per_volume"]
    print(
        f"generation shard {summary['shard']}: {summary['generated']} generated, {summary['skipped']} skipped, "
        f"{summary['failed']} failed"
        + (f", {rate:.2f} s/volume" if rate else "")
        + f" -> {cfg.paths.synthetic}"
    )
    for err in summary["errors"]:
        print(f"  error: {err}")
    return summary


# ------------------------------------------------------------------------------------ timing & figures
def default_timings(cfg: Config) -> list[tuple[str, int]]:
    """The samplers timed in notebook 04: the paper's full DDPM, and DDIM / DPM-Solver++ with few steps."""
    fast = min(cfg.generate.timing_fast_steps, cfg.diffusion.timesteps)
    return [("ddpm", cfg.diffusion.timesteps), ("ddim", fast), ("dpmpp", fast)]


def time_samplers(
    cfg: Config,
    samplers: Sequence[tuple[str, int]] | None = None,
    setup: SamplingSetup | None = None,
    budget_s: float | None = None,
    probe_steps: int = 5,
) -> pd.DataFrame:
    """Seconds per volume for each ``(sampler, steps)`` on the first validation mask.

    Each sampler is first run for ``probe_steps`` steps (DDPM, which must run all T steps, is probed with
    DDIM: the cost per step is the network evaluation). A sampler whose full run is then predicted to take
    longer than ``budget_s`` is not run: its time is extrapolated from its probe and labelled so in the
    ``how`` column.

    Args:
        cfg: run configuration.
        samplers: ``(name, steps)`` pairs (default :func:`default_timings`).
        setup: sampling setup (default: the configured checkpoint).
        budget_s: the most seconds one full timing run may take (default ``generate.timing_budget_s``).
        probe_steps: steps of the probe run.
    """
    from gliomagen.diffusion.samplers import make_sampler

    samplers = samplers or default_timings(cfg)
    budget_s = cfg.generate.timing_budget_s if budget_s is None else budget_s
    setup = setup or load_setup(cfg)
    job = val_jobs(cfg)[0]
    mask, _ = _load_job_mask(job, cfg)
    seed = [volume_seed(cfg.generate.seed, job.id)]
    probe_steps = min(probe_steps, cfg.diffusion.timesteps)

    def run(sampler: Any) -> float:
        t0 = time.perf_counter()
        sample_batch(SamplingSetup(**{**setup.__dict__, "sampler": sampler}), mask[None], seed)
        return time.perf_counter() - t0

    per_step: dict[str, float] = {}
    rows = []
    for name, steps in samplers:
        sampler = make_sampler(cfg, name, steps)
        # the ancestral DDPM cannot run fewer than T steps: its step cost is probed with DDIM (same network)
        probe_name = "ddim" if name == "ddpm" else name
        if probe_name not in per_step:
            per_step[probe_name] = run(make_sampler(cfg, probe_name, probe_steps)) / probe_steps
        predicted = per_step[probe_name] * len(sampler.timesteps)  # one network evaluation per timestep
        if predicted <= budget_s:
            seconds, how = run(sampler), "measured"
        else:
            seconds = predicted
            how = (
                f"extrapolated: {per_step[probe_name]:.3f} s/step from a {probe_steps}-step {probe_name} run"
            )
        rows.append({"sampler": name, "steps": steps, "seconds_per_volume": seconds, "how": how})
    frame = pd.DataFrame(rows)
    frame["shape"] = "x".join(map(str, mask.shape))
    frame["device"] = str(setup.device)
    frame["config_hash"] = cfg.hash
    write_csv(sampler_timing_path(cfg), frame)  # read back by the figures stage (notebook 07)
    return frame


def sampler_timing_path(cfg: Config) -> Path:
    """Where :func:`time_samplers` stores its table (``<run>/metrics/sampler_timing.csv``)."""
    return cfg.paths.metrics / "sampler_timing.csv"


def plot_sampler_timing(timing: pd.DataFrame) -> Any:
    """Bar chart of seconds per volume per sampler; extrapolated bars are hatched."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"{r.sampler}\n{r.steps} steps" for r in timing.itertuples()]
    bars = ax.bar(labels, timing["seconds_per_volume"], color="#4c72b0")
    for bar, how in zip(bars, timing["how"], strict=True):
        if how != "measured":
            bar.set_hatch("//")
            bar.set_facecolor("#c0c8d8")
        ax.annotate(
            f"{bar.get_height():.1f} s",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_yscale("log")
    ax.set_ylabel("seconds per volume (log)")
    device = timing["device"].iloc[0] if len(timing) else "?"
    shape = timing["shape"].iloc[0] if len(timing) else "?"
    ax.set_title(f"Sampling time per volume ({shape} on {device}; hatched = extrapolated)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_diffusion_process(
    cfg: Config,
    setup: SamplingSetup | None = None,
    case_id: str | None = None,
    modality: str = "t1c",
    n: int = 6,
) -> Any:
    """The paper's process figure for one validation case: the forward process q(x_t | x_0) applied to the
    real volume (top) and the reverse process from noise, conditioned on the same mask (bottom).

    Args:
        cfg: run configuration.
        setup: sampling setup (default: the configured checkpoint and sampler).
        case_id: validation case (default: the first).
        modality: which channel to show.
        n: number of time points per row.
    """
    from gliomagen.cases import load_case
    from gliomagen.diffusion.plots import lesion_slice, process_figure, state_times
    from gliomagen.diffusion.schedule import noisy_examples

    setup = setup or load_setup(cfg)
    job = next(j for j in val_jobs(cfg) if case_id in (None, j.id))
    case = load_case(job.mask_path.parent)
    channel = MODALITIES.index(modality)
    z = lesion_slice(case.mask, cfg)
    condition = setup.encode(torch.as_tensor(case.mask[None])).to(setup.device)
    generator = torch.Generator(device=setup.device).manual_seed(volume_seed(cfg.generate.seed, job.id))
    with torch.inference_mode():
        states = setup.sampler.trajectory(setup.model, condition, record=n, generator=generator)
    # a state recorded after step i stands for the next timestep (t = 0 after the last step); the forward row
    # shows the same t values, so each column is one time point of both processes
    times = state_times(setup.sampler.timesteps, [s["step"] for s in states])
    forward = noisy_examples(cfg, torch.from_numpy(case.image), sorted(set(times)), seed=cfg.generate.seed)
    return process_figure(
        {t: x[channel, :, :, z].numpy() for t, x in forward.items()},
        [(t, s["x_t"][0, channel, :, :, z].numpy()) for t, s in zip(times, states, strict=True)],
        case.mask[:, :, z],
        cfg,
        reverse_label=f"{setup.sampler_name}, {len(setup.sampler.timesteps)} steps",
        title=f"Diffusion process with the mask, {job.id}, {modality}, axial slice {z}",
    )


def _lesion_slice(mask: np.ndarray, cfg: Config) -> int:
    lesion = np.isin(mask, [lab.value for lab in cfg.tumour_labels])
    return int(round(np.argwhere(lesion)[:, 2].mean())) if lesion.any() else mask.shape[2] // 2


def plot_real_vs_synthetic(cfg: Config, ids: Sequence[str] | None = None, n: int = 3) -> Any:
    """The qualitative figure: for each validation case, real (top) and synthetic (bottom) rows of the four
    modalities on the axial slice through the lesion, plus the conditioning mask.

    Args:
        cfg: run configuration.
        ids: validation case ids (default: the first ``n`` generated ones).
        n: number of cases when ``ids`` is not given.
    """
    import matplotlib.pyplot as plt

    from gliomagen.diffusion.plots import mask_rgb

    if ids is None:
        frame = read_manifest(cfg)
        ids = list(frame.loc[frame["split"] == "val", "id"][:n])
    if not ids:
        raise ValueError(f"no generated validation volumes under {cfg.paths.synthetic / 'val'}")
    fig, axes = plt.subplots(
        2 * len(ids),
        len(MODALITIES) + 1,
        figsize=(2.2 * (len(MODALITIES) + 1), 4.4 * len(ids)),
        squeeze=False,
    )
    for k, case_id in enumerate(ids):
        real_dir, syn_dir = cfg.paths.prepared / "val" / case_id, cfg.paths.synthetic / "val" / case_id
        mask, _ = load_mask(syn_dir)
        z = _lesion_slice(mask, cfg)
        for r, (label, folder) in enumerate([("real", real_dir), ("synthetic", syn_dir)]):
            row = axes[2 * k + r]
            for c, modality in enumerate(MODALITIES):
                vol = np.asarray(nib.load(str(modality_path(folder, modality))).dataobj, dtype=np.float32)
                row[c].imshow(vol[:, :, z].T, cmap="gray", vmin=0, vmax=1, origin="lower")
                if k == 0 and r == 0:
                    row[c].set_title(modality)
            row[-1].imshow(np.transpose(mask_rgb(mask[:, :, z], cfg), (1, 0, 2)), origin="lower")
            row[0].set_ylabel(f"{case_id}\n{label}", fontsize=7)
            if k == 0 and r == 0:
                row[-1].set_title("mask")
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle("Validation cases: real (upper) vs generated from the real mask (lower)", fontsize=10)
    fig.tight_layout()
    return fig
