"""Training loader throughput at the paper's size: samples per second of the DataLoader (issue 19).

Reads the prepared cases of a paper-size run (192x192x144, e.g. the one ``benchmarks/paper_dryrun.py``
prepares) through exactly what training uses (:func:`gliomagen.diffusion.dataset.make_loader`: case from
the memory-mapped prepared-data cache, one-hot mask, timestep and Gaussian noise from the global sample
index, collated micro-batches of ``train.batch_size``), with ``--workers`` loader processes, and reports
samples per second after one warm-up micro-batch (the cache is built then if ``prepare`` did not write it).
The paper's step (batch 1 x 2 micro-batches) took 1.87 s on an A100, so a GPU needs about 1.1 samples/s.

``--routes`` picks where timesteps and noise are drawn: ``loader`` (CPU training: the loader draws them
with the CPU generator) and/or ``device`` (GPU training: the loader only reads and collates, the training
process draws them on the GPU, which this benchmark does not time). Each (route, workers) pair is measured
in turn, in the order given, and printed as a Markdown row with the load average at its end.

Usage:
    .venv/bin/python benchmarks/loader_speed.py --run-dir runs/paper-dryrun --workers 0 1 2 --samples 24
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(run_dir: Path, workers: int, samples: int, route: str = "loader") -> dict[str, object]:
    """Samples per second of the training loader of the paper-size run in ``run_dir``.

    Args:
        run_dir: a prepared paper-size run.
        workers: loader processes (0: this process).
        samples: samples to time after the warm-up micro-batch.
        route: ``loader`` (noise drawn in the loader) or ``device`` (noise left to the training device).
    """
    from gliomagen.config import load_config
    from gliomagen.data.prepare import usable_cases
    from gliomagen.diffusion.dataset import CaseDataset, make_loader

    cfg = load_config("paper", [f"runtime.loader_workers={workers}"], run_dir=run_dir)
    cases = CaseDataset(usable_cases(cfg, "train"), cfg)
    steps = samples // (cfg.train.batch_size * cfg.train.grad_accum) + 1
    batches = iter(make_loader(cfg, cases, 0, steps, noise_in_loader=route == "loader"))
    first = next(batches)  # warm-up: starts the workers, builds a missing cache
    shape = tuple(first[0].shape)
    tic, n = time.perf_counter(), 0
    for batch in batches:
        n += batch[0].shape[0]
    seconds = time.perf_counter() - tic
    return {"route": route, "workers": workers, "samples": n, "seconds": round(seconds, 2),
            "samples_per_s": round(n / seconds, 2), "cases": len(cases), "batch_shape": shape,
            "load_avg_1min": os.getloadavg()[0]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "paper-dryrun")
    p.add_argument("--workers", type=int, nargs="+", default=[2])
    p.add_argument("--routes", nargs="+", choices=["loader", "device"], default=["loader", "device"])
    p.add_argument("--samples", type=int, default=24)
    a = p.parse_args()
    rows = []
    for w in a.workers:
        for route in a.routes:
            r = measure(a.run_dir, w, a.samples, route)
            print(r, flush=True)
            rows.append(
                f"| {r['route']} | {w} | {r['samples']} | {r['samples_per_s']} | {r['load_avg_1min']:.1f} |"
            )
    print("\n| noise drawn in | workers | samples timed | samples/s | load (1 min) |\n|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
