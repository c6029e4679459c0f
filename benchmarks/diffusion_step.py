"""Seconds per training step and peak memory of the denoiser under the scale options (issue #4).

Each option set runs in a fresh subprocess (so the peak resident memory is its own): fp32, bf16 autocast,
gradient checkpointing, both, channels-last 3D. On CUDA the peak is ``torch.cuda.max_memory_allocated``;
on the CPU it is the process's peak RSS minus the RSS after building the model (activations + optimiser).

Usage:
    .venv/bin/python benchmarks/diffusion_step.py --profile smoke --shape 32 40 32 --batch 2 --steps 4
    .venv/bin/python benchmarks/diffusion_step.py --profile paper --shape 64 64 48 --batch 1 --steps 2

Writes ``benchmarks/results/diffusion_step_<profile>_<device>.csv`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

OPTIONS = {
    "fp32": {},
    "bf16": {"bf16": True},
    "checkpointing": {"grad_checkpointing": True},
    "bf16+checkpointing": {"bf16": True, "grad_checkpointing": True},
    "channels_last": {"channels_last": True},
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(profile: str, shape: list[int], batch: int, steps: int, option: str, device: str) -> dict:
    """One option set, in this process: build, warm up one step, time ``steps`` optimiser steps."""
    import torch

    from gliomagen.config import MODALITIES, load_config
    from gliomagen.diffusion.network import build_model, enable_grad_checkpointing, n_mask_channels

    cfg = load_config(profile)
    opts = OPTIONS[option]
    net = build_model(cfg).to(device)
    if opts.get("grad_checkpointing"):
        enable_grad_checkpointing(net)
    if opts.get("channels_last"):
        net.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)
    x = torch.randn(batch, len(MODALITIES) + n_mask_channels(cfg), *shape, device=device)
    if opts.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last_3d)
    t = torch.randint(0, cfg.diffusion.timesteps, (batch,), device=device)
    target = torch.randn(batch, len(MODALITIES), *shape, device=device)
    base_rss = _rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):
        tic = time.perf_counter()
        with torch.autocast(
            device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bool(opts.get("bf16"))
        ):
            out = net(x, timesteps=t)
        torch.nn.functional.l1_loss(out.float(), target).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - tic)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else _rss_mb() - base_rss
    return {
        "option": option,
        "profile": profile,
        "shape": "x".join(map(str, shape)),
        "batch": batch,
        "device": device,
        "threads": torch.get_num_threads(),
        "median_s_per_step": round(statistics.median(times), 3),
        "min_s_per_step": round(min(times), 3),
        "peak_mem_mb": round(peak, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="smoke")
    p.add_argument("--shape", type=int, nargs=3, default=None, help="default: the profile's target shape")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--options", nargs="*", default=list(OPTIONS), choices=list(OPTIONS))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one option and print JSON
    a = p.parse_args()
    if a.shape is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from gliomagen.config import load_config

        a.shape = list(load_config(a.profile).data.target_shape)
    if a.one:
        print(json.dumps(measure(a.profile, a.shape, a.batch, a.steps, a.one, a.device)))
        return
    rows = []
    for option in a.options:
        cmd = [sys.executable, __file__, "--profile", a.profile, "--shape", *map(str, a.shape)]
        cmd += ["--batch", str(a.batch), "--steps", str(a.steps), "--device", a.device, "--one", option]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            rows.append({"option": option, "error": out.stderr.strip().splitlines()[-1][:200]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    import pandas as pd

    frame = pd.DataFrame(rows)
    folder = Path(__file__).resolve().parent / "results"
    folder.mkdir(exist_ok=True)
    frame.to_csv(folder / f"diffusion_step_{a.profile}_{a.device.split(':')[0]}.csv", index=False)
    print(frame.to_markdown(index=False) if hasattr(frame, "to_markdown") else frame.to_string(index=False))


if __name__ == "__main__":
    main()
