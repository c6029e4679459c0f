"""Full-size GPU check of the paper network: training step time and memory, sampler time per volume.

On a machine with one CUDA GPU this measures, at the paper's 192x192x144 and with the paper profile's exact
network (57.6 M parameters):

* training: seconds per optimiser step (forward + L1 loss + backward + Adam, batch 1) and the CUDA peak
  (``torch.cuda.max_memory_allocated``) for fp32, bf16 autocast, and bf16 + gradient checkpointing, each
  option in its own subprocess so that one out-of-memory does not end the check;
* generation: seconds per volume for DDIM-25 and DPM-Solver++-20 (EMA-free random weights: the cost of a
  network evaluation does not depend on the weights).

It writes one CSV (``--out``, default ``benchmarks/results/gpu_check.csv``) and prints a Markdown table.
``--dry`` runs the same code on the CPU at 16x16x16, one step, 2 sampler steps and the paper network's code
at 8-32 channels, in seconds, so CI can check that the script and every stage it calls still exist.

Usage:
    .venv/bin/python benchmarks/gpu_check.py                # on a GPU machine, < 8 min on one A100/H100/H200
    .venv/bin/python benchmarks/gpu_check.py --dry          # CPU, seconds
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: training options: name -> (bf16 autocast, gradient checkpointing)
TRAIN_OPTIONS: dict[str, tuple[bool, bool]] = {
    "fp32": (False, False),
    "bf16": (True, False),
    "bf16+checkpointing": (True, True),
}
#: samplers timed: (name, network evaluations)
SAMPLERS: list[tuple[str, int]] = [("ddim", 25), ("dpmpp", 20)]
FULL_SHAPE = (192, 192, 144)
DRY_SHAPE = (16, 16, 16)
#: --dry: the paper profile's network code with 8-32 channels, so a CPU runs every stage in seconds
DRY_OVERRIDES = ["model.channels=[8,8,16,16,32]", "model.norm_num_groups=8", "model.num_head_channels=32"]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mib(device: str) -> float:
    import resource

    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _config(dry: bool):  # noqa: ANN202 - gliomagen.config is imported lazily (after sys.path is set)
    from gliomagen.config import load_config

    return load_config("paper", overrides=DRY_OVERRIDES if dry else [])


def measure_train(
    option: str, shape: tuple[int, ...], steps: int, device: str, dry: bool = False
) -> dict[str, object]:
    """Time ``steps`` optimiser steps (after one warm-up step) of the paper network under one option."""
    import torch

    from gliomagen.config import MODALITIES
    from gliomagen.diffusion.network import build_model, enable_grad_checkpointing, n_mask_channels

    bf16, checkpointing = TRAIN_OPTIONS[option]
    cfg = _config(dry)
    net = build_model(cfg).to(device)
    if checkpointing:
        enable_grad_checkpointing(net)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-5)
    x = torch.randn(1, len(MODALITIES) + n_mask_channels(cfg), *shape, device=device)
    t = torch.randint(0, cfg.diffusion.timesteps, (1,), device=device)
    target = torch.randn(1, len(MODALITIES), *shape, device=device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    for i in range(steps + 1):
        tic = time.perf_counter()
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            out = net(x, timesteps=t)
        torch.nn.functional.l1_loss(out.float(), target).backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        _sync(device)
        if i:  # the first step warms up the allocator and picks kernels
            times.append(time.perf_counter() - tic)
    times.sort()
    return {
        "kind": "train",
        "option": option,
        "s_per_unit": round(times[len(times) // 2], 4),
        "unit": "step (batch 1)",
        "peak_mib": round(_peak_mib(device), 1),
    }


def measure_sampler(
    name: str, steps: int, shape: tuple[int, ...], device: str, dry: bool = False
) -> dict[str, object]:
    """Seconds to generate one volume with ``name``-``steps`` (no autocast: generation runs in fp32)."""
    import numpy as np
    import torch

    from gliomagen.diffusion.network import build_model, encode_mask
    from gliomagen.diffusion.samplers import make_generator, make_sampler

    cfg = _config(dry)
    net = build_model(cfg).to(device).eval()
    mask = np.ones(shape, dtype=np.int64)  # a head filling the box; the labels do not change the cost
    condition = encode_mask(mask, cfg)[None]
    sampler = make_sampler(cfg, name, steps)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sampler.sample(net, condition, generator=make_generator(0, device))  # warm-up run
    _sync(device)
    tic = time.perf_counter()
    sampler.sample(net, condition, generator=make_generator(1, device))
    _sync(device)
    return {
        "kind": "generate",
        "option": f"{name}-{steps}",
        "s_per_unit": round(time.perf_counter() - tic, 3),
        "unit": "volume",
        "peak_mib": round(_peak_mib(device), 1),
    }


def _run_one(spec: str, shape: tuple[int, ...], steps: int, device: str, dry: bool) -> dict[str, object]:
    kind, _, option = spec.partition(":")
    if kind == "train":
        return measure_train(option, shape, steps, device, dry)
    name, _, n = option.partition("-")
    return measure_sampler(name, 2 if dry else int(n), shape, device, dry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU, 16^3, one step: checks the script runs")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per option (default 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.csv")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one measurement as JSON
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    device = args.device or ("cpu" if args.dry else "cuda")
    if args.dry:
        # one thread: on a shared CPU torch's default of one thread per core oversubscribes it (at load 6
        # on 2 cores the dry check took 165 s with 2 threads; the fp32 step alone 3.5 s instead of 0.15 s)
        torch.set_num_threads(1)
    if device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device is visible; run with --dry to check the script on a CPU",
            file=sys.stderr,
        )
        return 2
    shape = DRY_SHAPE if args.dry else FULL_SHAPE
    steps = 1 if args.dry else args.steps
    if args.one:
        print(json.dumps(_run_one(args.one, shape, steps, device, args.dry)))
        return 0

    specs = [f"train:{o}" for o in TRAIN_OPTIONS] + [f"generate:{n}-{s}" for n, s in SAMPLERS]
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu (dry run)"
    rows: list[dict[str, object]] = []
    for spec in specs:
        cmd = [sys.executable, __file__, "--one", spec, "--device", device, "--steps", str(args.steps)]
        if args.dry:
            cmd.append("--dry")
        tic = time.perf_counter()
        if args.dry:  # one process: the CPU check is about the code, not about separate memory peaks
            row = {**_run_one(spec, shape, steps, device, dry=True), "error": ""}
            row.update(
                device=gpu, shape="x".join(map(str, shape)), wall_s=round(time.perf_counter() - tic, 1)
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["error"] = ""
        else:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            kind, _, option = spec.partition(":")
            row = {
                "kind": kind,
                "option": option,
                "s_per_unit": "",
                "unit": "",
                "peak_mib": "",
                "error": last[:200],
            }
        row.update(device=gpu, shape="x".join(map(str, shape)), wall_s=round(time.perf_counter() - tic, 1))
        rows.append(row)
        print(json.dumps(row), flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["kind", "option", "s_per_unit", "unit", "peak_mib", "device", "shape", "wall_s", "error"]
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(args.out)
    print("\n| kind | option | s per unit | peak MiB | error |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['option']} | {r['s_per_unit']} {r['unit']} | {r['peak_mib']} | {r['error']} |"
        )
    print(f"\nwritten: {args.out}")
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
