"""benchmarks/gpu_check.py --dry: the GPU check's every stage runs on a CPU and writes its CSV."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_dry_writes_one_row_per_stage(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu_check.csv"
    assert module.main(["--dry", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["kind"], r["option"]) for r in rows] == [
        ("train", "fp32"),
        ("train", "bf16"),
        ("train", "bf16+checkpointing"),
        ("generate", "ddim-2"),
        ("generate", "dpmpp-2"),
    ]
    assert all(r["error"] == "" and float(r["s_per_unit"]) > 0 and r["shape"] == "16x16x16" for r in rows)
