"""Training loader throughput at the paper's size: samples per second of the DataLoader (issue 19).

Reads the prepared cases of a paper-size run (192x192x144, e.g. the one ``benchmarks/paper_dryrun.py``
prepares) through exactly what training uses (:func:`gliomagen.diffusion.dataset.make_loader`: case from
the memory-mapped prepared-data cache, one-hot mask, timestep and Gaussian noise from the global sample
index, collated micro-batches of ``train.batch_size``), with ``--workers`` loader processes, and reports
samples per second after one warm-up micro-batch (the cache is built then if ``prepare`` did not write it).
The paper's step (batch 1 x 2 micro-batches) took 1.87 s on an A100, so a GPU needs about 1.1 samples/s.

Usage:
    .venv/bin/python benchmarks/loader_speed.py --run-dir runs/paper-dryrun --workers 2 --samples 24
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(run_dir: Path, workers: int, samples: int) -> dict[str, float]:
    from gliomagen.config import load_config
    from gliomagen.data.prepare import usable_cases
    from gliomagen.diffusion.dataset import CaseDataset, make_loader

    cfg = load_config("paper", [f"runtime.loader_workers={workers}"], run_dir=run_dir)
    cases = CaseDataset(usable_cases(cfg, "train"), cfg)
    steps = samples // (cfg.train.batch_size * cfg.train.grad_accum) + 1
    batches = iter(make_loader(cfg, cases, 0, steps))
    first = next(batches)  # warm-up: starts the workers, builds a missing cache
    shape = tuple(first[0].shape)
    tic, n = time.perf_counter(), 0
    for batch in batches:
        n += batch[0].shape[0]
    seconds = time.perf_counter() - tic
    return {"workers": workers, "samples": n, "seconds": seconds, "samples_per_s": n / seconds,
            "cases": len(cases), "batch_shape": shape}  # type: ignore[dict-item]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "paper-dryrun")
    p.add_argument("--workers", type=int, nargs="+", default=[2])
    p.add_argument("--samples", type=int, default=24)
    a = p.parse_args()
    for w in a.workers:
        print(measure(a.run_dir, w, a.samples), flush=True)


if __name__ == "__main__":
    main()
