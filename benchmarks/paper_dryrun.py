"""Paper-size dry run: every stage at the paper's sizes, with only the amount of work reduced (issue 19).

``configs/paper.yaml`` as it is (192x192x144, the 57.6 M-parameter network, T = 1000, nnU-Net 3d_fullres),
overriding only how much work is done (patients, steps, epochs, iterations), never a size:

=============  ===================================================================================
stage          what runs
=============  ===================================================================================
phantom        ``gliomagen phantom --brats-grid``: 3 patients x 1 scan on the BraTS 1 mm grid
prepare        ``gliomagen prepare``: validation, head label, resampling to 192x192x144, QC, split, cache
import         a random paper network written in the original's checkpoint layout
               (:func:`~gliomagen.diffusion.import_weights.original_checkpoint`), then imported with
               :func:`~gliomagen.diffusion.import_weights.import_weights` (what ``import-weights`` runs)
generate       ``gliomagen generate --which val``: one full-size volume, DDIM with 2 steps (two real
               192x192x144 forwards of the 57.6 M network)
fidelity       ``gliomagen fidelity`` on that volume (small bootstrap)
nnunet         ``gliomagen segment --configuration real_only``: nnU-Net v2 3d_fullres plan + preprocess +
               2 training iterations
train-step     ``gliomagen train --max-steps 1``: one real full-size optimiser step (batch 1 x
               grad_accum 2) with the option ``--train-option`` (default bf16 + checkpointing)
=============  ===================================================================================

Each stage runs as its own process; its wall time and peak resident memory (``wait4``'s ``ru_maxrss`` of
the process and its children) are printed and appended as a table to ``benchmarks/README.md`` (with
``--record``). ``--only`` picks stages (in the order above); ``train-step`` is never in the default set
because it needs about 12 GiB (bf16) to 27 GiB (fp32, CPU RSS law) and should run alone.

Usage:
    .venv/bin/python benchmarks/paper_dryrun.py                              # every stage but train-step
    .venv/bin/python benchmarks/paper_dryrun.py --only phantom prepare import
    .venv/bin/python benchmarks/paper_dryrun.py --only train-step --record   # alone on the machine
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["phantom", "prepare", "import", "generate", "fidelity", "nnunet", "train-step"]
DEFAULT = [s for s in STAGES if s != "train-step"]
#: the amount of work only (never a size)
WORK = [
    "data.phantom={patients: 3, max_timepoints: 1}",
    "data.split.n_val=1",
    "runtime.workers=1",
    "runtime.loader_workers=0",
    "runtime.device=cpu",
    "fidelity.bootstrap=20",
    "segment.epochs=1",
    "segment.iterations_per_epoch=2",
    "segment.val_iterations_per_epoch=1",
    "segment.final_validation=false",
    "segment.tta=false",
    "segment.bootstrap=20",
]
TRAIN_OPTIONS = {
    "bf16+segments": ["train.bf16=true", "train.grad_checkpointing=true"],
    "fp32+segments": ["train.bf16=false", "train.grad_checkpointing=true"],
}

IMPORT_SNIPPET = """
import sys, torch
from gliomagen.config import load_config
from gliomagen.diffusion.import_weights import original_checkpoint
from gliomagen.diffusion.network import build_model
cfg = load_config("paper", sys.argv[2:])
torch.manual_seed(0)
state = build_model(cfg).state_dict()
torch.save(original_checkpoint(state, cfg, step=0, ema=state), sys.argv[1])
"""
#: what ``gliomagen import-weights SRC --out DST`` runs (its entry point, called directly)
IMPORT_RUN = """
import sys
from gliomagen.config import load_config
from gliomagen.diffusion.import_weights import import_weights
record = import_weights(sys.argv[1], sys.argv[2], load_config("paper", sys.argv[3:]))
print({k: record[k] for k in ("which", "source_step", "parameters")})
"""


def cli(run: Path, verb: str, *args: str, extra: list[str] | None = None) -> list[str]:
    sets = [f"--set={o}" for o in [f"data.raw_dir={run / 'raw'}", *WORK, *(extra or [])]]
    return [
        sys.executable,
        "-m",
        "gliomagen.cli",
        verb,
        "--profile",
        "paper",
        "--run-dir",
        str(run),
        *sets,
        *args,
    ]


def commands(run: Path, train_option: str) -> dict[str, list[list[str]]]:
    original, imported = run / "original_layout.pt", run / "imported.pt"
    overrides = [f"data.raw_dir={run / 'raw'}", *WORK]
    return {
        "phantom": [cli(run, "phantom", "--brats-grid")],
        "prepare": [cli(run, "prepare")],
        "import": [
            [sys.executable, "-c", IMPORT_SNIPPET, str(original), *overrides],
            [sys.executable, "-c", IMPORT_RUN, str(original), str(imported), *overrides],
        ],
        "generate": [
            cli(
                run,
                "generate",
                "--which",
                "val",
                "--sampler",
                "ddim",
                "--steps",
                "2",
                extra=[f"generate.checkpoint={imported}"],
            )
        ],  # fmt: skip
        "fidelity": [cli(run, "fidelity", extra=[f"generate.checkpoint={imported}"])],
        "nnunet": [cli(run, "segment", "--configuration", "real_only")],
        "train-step": [cli(run, "train", "--max-steps", "1", extra=TRAIN_OPTIONS[train_option])],
    }


def run_stage(argv: list[list[str]], log: Path) -> tuple[int, float, float]:
    """Run the stage's commands in turn; ``(exit code, seconds, peak RSS GiB of the largest process)``."""
    tic, peak, code = time.perf_counter(), 0.0, 0
    with log.open("a") as out:
        for cmd in argv:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            peak = max(peak, usage.ru_maxrss / 2**20)  # KiB -> GiB
            code = proc.returncode
            if code:
                break
    return code, time.perf_counter() - tic, peak


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--only", nargs="+", choices=STAGES, default=DEFAULT)
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "paper-dryrun")
    p.add_argument("--train-option", choices=list(TRAIN_OPTIONS), default="bf16+segments")
    p.add_argument("--record", action="store_true", help="append the table to benchmarks/README.md")
    a = p.parse_args()
    run = a.run_dir.resolve()
    run.mkdir(parents=True, exist_ok=True)
    log = run / "dryrun.log"
    todo = commands(run, a.train_option)
    rows = []
    for stage in [s for s in STAGES if s in a.only]:
        code, seconds, peak = run_stage(todo[stage], log)
        status = "ok" if code == 0 else f"exit {code} (see {log})"
        label = f"{stage} ({a.train_option})" if stage == "train-step" else stage
        rows.append(f"| {label} | {seconds:.0f} | {peak:.2f} | {status} |")
        print(rows[-1], flush=True)
        if code:
            break
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join(
        [
            f"\nDry run of {stamp} on {cpu_name()} ({os.cpu_count()} cores visible), run folder `{run}`:\n",
            "| stage | seconds | peak RSS (GiB) | result |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if a.record:
        with (ROOT / "benchmarks" / "README.md").open("a") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
