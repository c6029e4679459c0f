"""Generation: masks to four-modality volumes (``gliomagen generate``) and the sampler sweep.

- :mod:`~gliomagen.generation.jobs`: which masks, their seeds and shards;
- :mod:`~gliomagen.generation.sampling`: the loaded model and sampler, one batched call;
- :mod:`~gliomagen.generation.stage`: the resumable, shardable stage and its CLI;
- :mod:`~gliomagen.generation.outputs`: every file the stage writes, and their readers;
- :mod:`~gliomagen.generation.timing`, :mod:`~gliomagen.generation.plots`: notebook 04's table and figures;
- :mod:`~gliomagen.generation.sweep`: quality and speed against network evaluations (issue 18).
"""

from __future__ import annotations

from gliomagen.generation.jobs import (
    Job,
    ShardError,
    all_jobs,
    load_job_mask,
    parse_shard,
    shard_jobs,
    synthetic_jobs,
    torchrun_shard,
    val_jobs,
    volume_seed,
)
from gliomagen.generation.outputs import MANIFEST_COLUMNS, GenerationOutputs
from gliomagen.generation.sampling import BATCH_TOLERANCE, SamplingSetup, load_setup, sample_batch
from gliomagen.generation.stage import GenerationResult, generate, merge_manifest, output_dir, run_cli

__all__ = [
    "BATCH_TOLERANCE",
    "MANIFEST_COLUMNS",
    "GenerationOutputs",
    "GenerationResult",
    "Job",
    "SamplingSetup",
    "ShardError",
    "all_jobs",
    "generate",
    "load_job_mask",
    "load_setup",
    "merge_manifest",
    "output_dir",
    "parse_shard",
    "run_cli",
    "sample_batch",
    "shard_jobs",
    "synthetic_jobs",
    "torchrun_shard",
    "val_jobs",
    "volume_seed",
]
