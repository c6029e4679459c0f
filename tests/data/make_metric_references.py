"""Reference values for the segmentation-metric tests, computed once with the official packages.

The label maps are built here, deterministically, from boxes (no stored arrays). Run it in throwaway virtual
environments that hold the reference packages, never in the project's own environment:

    python3.11 -m venv /tmp/bratsenv && /tmp/bratsenv/bin/pip install brats-evaluation==0.0.10
    python3.11 -m venv /tmp/medpyenv && /tmp/medpyenv/bin/pip install "medpy==0.5.2"
    /tmp/bratsenv/bin/python tests/data/make_metric_references.py brats
    /tmp/medpyenv/bin/python tests/data/make_metric_references.py medpy

Each run updates its own section of ``metric_references.json`` beside this file. Labels are BraTS 2024
post-treatment values (1 NETC, 2 SNFH, 3 ET, 4 RC), so the package's bundled GLI config applies unchanged.
This file imports only numpy and the reference package, so the tests can import :func:`cases` as well.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("metric_references.json")
SHAPE = (24, 16, 16)
NETC, SNFH, ET, RC = 1, 2, 3, 4


def _box(m: np.ndarray, value: int, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> None:
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value


def cases() -> dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """name -> (reference label map, prediction label map, voxel spacing)."""
    out = {}
    # several lesions: ET A matched partly, ET B missed, one spurious ET; SNFH around A; RC matched exactly
    ref, pred = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    _box(ref, SNFH, (1, 1, 1), (8, 8, 8))
    _box(ref, ET, (3, 3, 3), (6, 6, 6))
    _box(ref, ET, (14, 2, 2), (17, 5, 5))
    _box(ref, RC, (18, 10, 10), (22, 14, 14))
    _box(pred, SNFH, (1, 1, 2), (8, 9, 8))
    _box(pred, ET, (3, 3, 3), (6, 6, 5))
    _box(pred, ET, (10, 11, 2), (12, 13, 4))
    _box(pred, RC, (18, 10, 10), (22, 14, 14))
    out["several_lesions"] = (ref, pred, (1.0, 1.0, 1.0))
    # prediction empty, reference has NETC and ET
    ref = np.zeros(SHAPE, np.uint8)
    _box(ref, NETC, (4, 4, 4), (7, 7, 7))
    _box(ref, ET, (12, 4, 4), (15, 8, 8))
    out["prediction_empty"] = (ref, np.zeros(SHAPE, np.uint8), (1.0, 1.0, 1.0))
    # reference empty, prediction has SNFH
    pred = np.zeros(SHAPE, np.uint8)
    _box(pred, SNFH, (5, 5, 5), (9, 9, 9))
    out["reference_empty"] = (np.zeros(SHAPE, np.uint8), pred, (1.0, 1.0, 1.0))
    # both empty
    out["both_empty"] = (np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8), (1.0, 1.0, 1.0))
    # no overlap although both have a lesion; plus one prediction covering two reference NETC lesions
    ref, pred = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    _box(ref, ET, (2, 2, 2), (5, 5, 5))
    _box(pred, ET, (10, 10, 10), (13, 13, 13))
    _box(ref, NETC, (16, 2, 2), (18, 4, 4))
    _box(ref, NETC, (20, 2, 2), (22, 4, 4))
    _box(pred, NETC, (16, 2, 2), (22, 4, 4))
    out["no_match_and_merge"] = (ref, pred, (1.0, 1.0, 1.0))
    # anisotropic voxels, shifted lesion
    ref, pred = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    _box(ref, ET, (4, 4, 4), (10, 9, 8))
    _box(pred, ET, (5, 4, 5), (11, 10, 9))
    out["anisotropic"] = (ref, pred, (1.0, 1.0, 2.0))
    return out


def medpy_pair() -> tuple[np.ndarray, np.ndarray]:
    """A fixed pair whose two borders differ in size (medpy 0.4 and 0.5 ASSD then disagree)."""
    a, b = np.zeros((20, 18, 16), bool), np.zeros((20, 18, 16), bool)
    a[3:12, 4:10, 3:9] = True
    b[5:9, 5:9, 4:7] = True
    b[14:17, 12:15, 10:14] = True
    return a, b


def _num(x: float) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def brats() -> dict:
    from importlib.metadata import version
    from importlib.resources import files

    from panoptica import Panoptica_Evaluator

    config = str(files("brats_evaluation").joinpath("configs", "config_gli.yaml"))
    evaluator = Panoptica_Evaluator.load_from_config(config)
    keys = ("tp", "fp", "fn", "prec", "rec", "rq", "sq_dsc", "sq_hd95", "global_bin_dsc", "global_bin_hd95")
    result = {}
    for name, (ref, pred, spacing) in cases().items():
        groups = evaluator.evaluate(pred, ref, voxelspacing=spacing, verbose=False)
        result[name] = {
            g: {k: _num(r.to_dict(True).get(k, float("nan"))) for k in keys} for g, r in groups.items()
        }
    return {
        "package": f"brats-evaluation {version('brats-evaluation')}, panoptica {version('panoptica')}",
        "config": "bundled config_gli.yaml",
        "cases": result,
    }


def medpy() -> dict:
    from importlib.metadata import version

    from medpy.metric import binary

    a, b = medpy_pair()
    return {
        "package": f"medpy {version('medpy')}",
        "assd": _num(binary.assd(a, b)),
        "assd_spacing_1_1_2": _num(binary.assd(a, b, voxelspacing=(1, 1, 2))),
        "hd95": _num(binary.hd95(a, b)),
        "asd_a_to_b": _num(binary.asd(a, b)),
        "asd_b_to_a": _num(binary.asd(b, a)),
    }


if __name__ == "__main__":
    which = sys.argv[1]
    data = json.loads(OUT.read_text()) if OUT.is_file() else {}
    data[which] = {"brats": brats, "medpy": medpy}[which]()
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(json.dumps(data[which], indent=1))
