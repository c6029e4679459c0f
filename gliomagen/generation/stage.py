"""The generation stage (``gliomagen generate``): resumable, shardable, with a manifest of every volume.

Two sets of masks are sampled (docs/method.md):

* ``val``: every validation mask (``<run>/prepared/val``) into ``<run>/synthetic/val/<id>/`` (same id as the
  real case), for the fidelity metrics and the qualitative figure;
* ``synthetic``: the accepted augmented masks (at most ``generate.n_synthetic``, round 1 first, so 1062 of
  2124 is the paper's "one round") into ``<run>/synthetic/train/<aug_id>/``.

Each output folder uses BraTS naming; the ``-seg`` file is the conditioning mask, every file has the mask's
affine, and images are clamped to [0, 1] (the original wrote unclamped values and flipped at evaluation).
``--shard i/n`` (or ``RANK``/``WORLD_SIZE`` under ``torchrun``) takes every n-th mask; each shard writes its
own manifest part and the parts are merged into the manifest (:mod:`gliomagen.generation.outputs`). Complete
outputs with a manifest row for the same checkpoint, sampler, steps and seed are skipped. Noise, batching
and its tolerance: :mod:`gliomagen.generation.sampling`.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gliomagen.cases import Case, is_complete, write_case
from gliomagen.config import Config
from gliomagen.diffusion.orientation import sample_oriented
from gliomagen.generation.jobs import (
    Job,
    all_jobs,
    batches,
    parse_shard,
    shard_jobs,
    torchrun_shard,
    volume_seed,
)
from gliomagen.generation.outputs import (
    MANIFEST_COLUMNS,
    GenerationOutputs,
    read_manifest,
    read_manifest_file,
)
from gliomagen.generation.sampling import SamplingSetup, load_setup, sample_batch
from gliomagen.io import provenance, write_csv, write_json
from gliomagen.locks import run_lock

log = logging.getLogger(__name__)

#: what must match for an existing volume to count as done
IDENTITY = ["sampler", "steps", "seed", "checkpoint_sha256"]


@dataclass(frozen=True)
class GenerationResult:
    """What one run of the stage did (also written as ``metrics/generation[_shard].json``).

    Args:
        shard: ``"i/n"``.
        volumes: jobs of this shard.
        generated: volumes written now.
        skipped: volumes already done.
        failed: masks that could not be used.
        errors: one line per failure.
        sampler: sampler name.
        steps: its network evaluations.
        seconds_per_volume: mean over the volumes written now (``None`` if none).
        manifest_rows: rows of the merged manifest.
        provenance: config hash, versions, checkpoint hash.
    """

    shard: str
    volumes: int
    generated: int
    skipped: int
    failed: int
    errors: tuple[str, ...]
    sampler: str
    steps: int
    seconds_per_volume: float | None
    manifest_rows: int
    provenance: dict[str, Any] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "errors": list(self.errors)}


def outputs(cfg: Config) -> GenerationOutputs:
    """The stage's output files in this run."""
    return GenerationOutputs(cfg.paths)


def output_dir(cfg: Config, job: Job) -> Path:
    return outputs(cfg).volume_dir(job.split, job.id)


def merge_manifest(cfg: Config) -> pd.DataFrame:
    """Write the merged manifest (atomic) and return it."""
    out = outputs(cfg)
    frame = read_manifest(out)
    write_csv(out.manifest, frame)
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


def generate(
    cfg: Config,
    which: str = "all",
    shard: tuple[int, int] | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    setup: SamplingSetup | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> GenerationResult:
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
) -> GenerationResult:
    out = outputs(cfg)
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
    known = {(str(r["split"]), str(r["id"])): r for r in _records(read_manifest(out))}
    part = out.manifest_part(shard)
    part_rows = {
        (r["split"], r["id"]): r for r in (_records(read_manifest_file(part)) if part.is_file() else [])
    }
    todo = [
        j for j in jobs if not _is_done(j, cfg, known, {**base, "seed": volume_seed(cfg.generate.seed, j.id)})
    ]
    skipped = len(jobs) - len(todo)
    log.info("generation shard %d/%d: %d volumes, %d already done", shard[0], shard[1], len(jobs), skipped)
    errors: list[str] = []
    seconds: list[float] = []
    bar = tqdm(total=len(todo), desc=f"generate {shard[0]}/{shard[1]}", unit="vol", disable=not progress)
    for batch in batches(todo, cfg, cfg.generate.batch_size, errors):
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
        # after every batch: an interruption loses one batch at most
        write_csv(part, pd.DataFrame(list(part_rows.values())).reindex(columns=MANIFEST_COLUMNS))
        bar.update(len(seconds) + len(errors) - bar.n)  # bad masks skipped while batching count as done
        bar.set_postfix(s_per_vol=f"{per_volume:.1f}")
    bar.close()
    frame = merge_manifest(cfg)
    result = GenerationResult(
        shard=f"{shard[0]}/{shard[1]}",
        volumes=len(jobs),
        generated=len(seconds),
        skipped=skipped,
        failed=len(errors),
        errors=tuple(errors),
        sampler=setup.sampler_name,
        steps=setup.steps,
        seconds_per_volume=float(np.mean(seconds)) if seconds else None,
        manifest_rows=len(frame),
        provenance=provenance(cfg.hash, checkpoint_sha256=setup.checkpoint_sha256),
    )
    write_json(out.summary(shard), result.as_dict())
    return result


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], frame.to_dict("records"))


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def run_cli(cfg: Config, args: argparse.Namespace) -> GenerationResult:
    """``gliomagen generate [--which val|synthetic|all] [--sampler S] [--steps N] [--shard i/n]``."""
    result = generate(
        cfg,
        which=getattr(args, "which", "all") or "all",
        shard=parse_shard(getattr(args, "shard", None)),
        sampler=getattr(args, "sampler", None),
        steps=getattr(args, "steps", None),
    )
    rate = result.seconds_per_volume
    print(
        f"generation shard {result.shard}: {result.generated} generated, {result.skipped} skipped, "
        f"{result.failed} failed" + (f", {rate:.2f} s/volume" if rate else "") + f" -> {cfg.paths.synthetic}"
    )
    for err in result.errors:
        print(f"  error: {err}")
    return result
