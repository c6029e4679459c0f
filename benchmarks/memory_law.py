"""Training memory of the paper network: measured at small sizes, extrapolated linearly in voxels (issue 19).

For each option (precision x activation checkpointing) and each input size, one process builds the paper
profile's network (57.6 M parameters), records its resident memory (the *baseline*: weights, inputs,
libraries), runs one forward + L1 loss + backward at batch 1 and records the peak resident memory. The
*activations* are peak minus baseline (they include the 0.23 GB of gradients). Each measurement runs in
its own subprocess, so its peak is its own, and a size is skipped when the law fitted to the smaller sizes
predicts more than ``--budget-gib``. The law ``activations = a + b * voxels`` is the line through the two
largest measured sizes (at small sizes a size-independent peak in the deep levels dominates); 192x192x144
is extrapolated from it (labelled so). A training step adds the model
state beside the activations: weights, gradients, two Adam moments and the EMA copy (5 x 4 bytes per
parameter, 1.07 GiB for the paper network), reported as ``full step``.

Usage:
    .venv/bin/python benchmarks/memory_law.py                          # every option, default sizes
    .venv/bin/python benchmarks/memory_law.py --options bf16+segments --sizes 64x64x48 96x96x64
    .venv/bin/python benchmarks/memory_law.py --one fp32+segments --size 32x32x32   # one measurement

Writes ``benchmarks/results/memory_law.csv`` (one row per measurement) and prints the law table as Markdown.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: option -> (bf16 autocast, checkpointing mode of gliomagen.diffusion.network.enable_grad_checkpointing)
OPTIONS: dict[str, tuple[bool, str]] = {
    "fp32": (False, "none"),
    "fp32+blocks": (False, "blocks"),
    "fp32+segments": (False, "segments"),
    "bf16+blocks": (True, "blocks"),
    "bf16+segments": (True, "segments"),
    "fp32+segments+cl": (False, "segments"),
}
#: options whose network and input are channels-last 3D (``train.channels_last``): on a CPU, oneDNN then
#: convolves NDHWC tensors as they are instead of reordering them into its blocked layout (a copy)
CHANNELS_LAST = {"fp32+segments+cl"}
SIZES = ["64x64x48", "96x96x64", "128x128x96", "160x160x112"]
FULL = (192, 192, 144)
GIB = 2**30
#: weights + gradients + two Adam moments + EMA, float32
STATE_BYTES_PER_PARAMETER = 5 * 4


def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _rss_now_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def parse_size(text: str) -> tuple[int, int, int]:
    x, y, z = (int(v) for v in text.lower().split("x"))
    return x, y, z


def voxels(size: tuple[int, ...]) -> int:
    n = 1
    for s in size:
        n *= s
    return n


def measure(option: str, size: tuple[int, int, int]) -> dict[str, object]:
    """One forward + L1 loss + backward of the paper network at batch 1, in this process."""
    import torch

    from gliomagen.config import MODALITIES, load_config
    from gliomagen.diffusion.network import build_model, count_parameters, enable_grad_checkpointing

    bf16, mode = OPTIONS[option]
    cfg = load_config("paper")
    torch.manual_seed(0)
    net = build_model(cfg)
    enable_grad_checkpointing(net, mode)
    net.train()
    channels = net.conv_in.conv.in_channels
    x = torch.randn(1, channels, *size)
    if option in CHANNELS_LAST:
        net.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    target = torch.randn(1, len(MODALITIES), *size)
    t = torch.tensor([500])
    base = _rss_now_bytes()
    tic = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = net(x, timesteps=t)
    torch.nn.functional.l1_loss(out.float(), target).backward()
    seconds = time.perf_counter() - tic
    peak = _rss_peak_bytes()
    return {
        "option": option,
        "size": "x".join(map(str, size)),
        "voxels": voxels(size),
        "baseline_mib": round(base / 2**20, 1),
        "peak_mib": round(peak / 2**20, 1),
        "activations_mib": round((peak - base) / 2**20, 1),
        "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "parameters": count_parameters(net),
    }


def tracked(option: str, size: tuple[int, int, int]) -> dict[str, object]:
    """The same forward + backward on fake tensors (no data, no compute): the exact peak of live tensor
    bytes (PyTorch's ``MemTracker``; what a GPU's ``max_memory_allocated`` counts, without CPU workspaces).
    Runs in seconds at any size, 192x192x144 included, and for bf16 also on a CPU without bf16 units."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    from gliomagen.config import MODALITIES, load_config
    from gliomagen.diffusion.network import build_model, enable_grad_checkpointing

    bf16, mode = OPTIONS[option]
    cfg = load_config("paper")
    with FakeTensorMode():
        net = build_model(cfg)
        enable_grad_checkpointing(net, mode)
        net.train()
        x = torch.randn(1, net.conv_in.conv.in_channels, *size)
        target = torch.randn(1, len(MODALITIES), *size)
        tracker = MemTracker()
        tracker.track_external(net, x, target)
        with tracker:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = net(x, timesteps=torch.tensor([500]))
            torch.nn.functional.l1_loss(out.float(), target).backward()
        peak = next(iter(tracker.get_tracker_snapshot("peak").values()))
    params = sum(v for k, v in peak.items() if "PARAM" in str(k))
    return {
        "option": option,
        "size": "x".join(map(str, size)),
        "tensor_peak_mib": round((peak["Total"] - params) / 2**20, 1),  # activations + gradients
    }


def run_one(option: str, size: str) -> dict[str, object]:
    """:func:`measure` in a fresh subprocess (its peak is its own)."""
    cmd = [sys.executable, __file__, "--one", option, "--size", size]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1][:200]
        return {"option": option, "size": size, "error": f"exit {done.returncode}: {tail}"}
    row: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``y = a + b * v`` (through one point: ``b = y / v``)."""
    if len(points) == 1:
        v, y = points[0]
        return 0.0, y / v
    n = len(points)
    mv = sum(v for v, _ in points) / n
    my = sum(y for _, y in points) / n
    b = sum((v - mv) * (y - my) for v, y in points) / sum((v - mv) ** 2 for v, _ in points)
    return my - b * mv, b


def law_table(rows: list[dict[str, object]], sizes: list[str], parameters: int) -> str:
    """Markdown: activations (MiB) per option and size, the fitted law and the 192x192x144 extrapolation."""
    state_gib = parameters * STATE_BYTES_PER_PARAMETER / GIB
    head = [
        "option",
        *sizes,
        "law (MiB)",
        "192x192x144 activations (extrapolated)",
        "full step (extrapolated)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for option in dict.fromkeys(str(r["option"]) for r in rows):
        mine = {str(r["size"]): r for r in rows if r["option"] == option}
        cells, points = [], []
        for s in sizes:
            r = mine.get(s)
            if r is None or "activations_mib" not in r:
                cells.append("—" if r is None else "error")
                continue
            act = float(r["activations_mib"])  # type: ignore[arg-type]
            cells.append(f"{act:.0f}")
            points.append((voxels(parse_size(s)), act))
        if not points:
            continue
        a, b = fit(points[-2:])  # the two largest: at small sizes a size-independent peak dominates
        full = (a + b * voxels(FULL)) / 1024
        law = f"{a:.0f} + {b * 1e3:.2f} per 1000 voxels"
        lines.append(
            f"| {option} | "
            + " | ".join(cells)
            + f" | {law} | ≈ {full:.1f} GiB | ≈ {full + state_gib:.1f} GiB |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--options", nargs="*", default=list(OPTIONS), choices=list(OPTIONS))
    p.add_argument("--sizes", nargs="*", default=SIZES)
    p.add_argument("--budget-gib", type=float, default=7.5, help="skip sizes predicted to need more")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory_law.csv")
    p.add_argument("--one", choices=list(OPTIONS), help="measure one option in this process (JSON line)")
    p.add_argument("--size", default="32x32x32", help="with --one")
    p.add_argument(
        "--tracked", action="store_true", help="fake-tensor tensor peaks (--sizes and 192x192x144)"
    )
    a = p.parse_args()
    if a.one:
        print(json.dumps(measure(a.one, parse_size(a.size))))
        return
    if a.tracked:
        sizes = [*a.sizes, "x".join(map(str, FULL))]
        found = [tracked(o, parse_size(s)) for o in a.options for s in sizes]
        for row in found:
            print(json.dumps(row), flush=True)
        head = ["option", *sizes]
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for o in a.options:
            mine = {r["size"]: r["tensor_peak_mib"] for r in found if r["option"] == o}
            print(f"| {o} | " + " | ".join(f"{float(mine[s]) / 1024:.2f} GiB" for s in sizes) + " |")  # type: ignore[arg-type]
        return
    rows: list[dict[str, object]] = []
    parameters = 0
    for option in a.options:
        points: list[tuple[int, float]] = []
        for size in a.sizes:
            v = voxels(parse_size(size))
            if points:
                fa, fb = fit(points)
                predicted = (fa + fb * v) / 1024 + 0.8  # + baseline
                if predicted > a.budget_gib:
                    print(
                        f"{option} {size}: skipped (predicted {predicted:.1f} GiB > {a.budget_gib})",
                        flush=True,
                    )
                    continue
            row = run_one(option, size)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if "activations_mib" in row:
                points.append((v, float(row["activations_mib"])))  # type: ignore[arg-type]
                parameters = int(row["parameters"])  # type: ignore[call-overload]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r})
    with a.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    print(law_table(rows, a.sizes, parameters or 57_566_020))


if __name__ == "__main__":
    main()
