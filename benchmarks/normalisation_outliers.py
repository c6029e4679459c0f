"""Normalisation with and without an injected 1e30 voxel on phantom scans (issue 13).

Usage: python benchmarks/normalisation_outliers.py [max|mid] [phantom folder]
  max: the outlier replaces the scan's brightest voxel; mid: a voxel in the middle of the brain.
Prints, per method, the largest change of a clean scan against plain min-max, the largest change the outlier
causes (outside its own voxel), and the median 99th percentile of the normalised brain.
"""

import sys
from pathlib import Path

import numpy as np

from gliomagen.config import MODALITIES, PhantomConfig, load_config
from gliomagen.data.phantom import make_phantom
from gliomagen.data.validate import discover_cases, load_raw_case

MODE = sys.argv[1] if len(sys.argv) > 1 else "max"
root = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/gliomagen_norm_phantom")
if not root.exists():
    make_phantom(
        root,
        PhantomConfig(patients=3, max_timepoints=1, shape=(91, 109, 91), spacing=2.0, seed=0),
        progress=False,
    )
labels = load_config("smoke").data.labels
cases, _ = discover_cases(root)


def minmax(d):
    d = d.astype(np.float64)
    lo, hi = d.min(), d.max()
    return (d - lo) / (hi - lo)


def pclip(d, p=(0.5, 99.5)):
    d = d.astype(np.float64)
    nz = d[d != 0]
    lo, hi = np.percentile(nz, p)
    return minmax(np.clip(d, lo, hi))


def fence(d, k):
    d = d.astype(np.float64)
    nz = d[d != 0]
    lo, hi = np.percentile(nz, (1, 99))
    r = hi - lo
    inl = d[(d >= lo - k * r) & (d <= hi + k * r)]
    return minmax(np.clip(d, inl.min(), inl.max()))


methods = {
    "minmax (paper)": minmax,
    "pclip 0.5/99.5": pclip,
    "fence k=10": lambda d: fence(d, 10),
    "fence k=3": lambda d: fence(d, 3),
}
excess = []
rows = {
    m: {"clean_vs_minmax": [], "outlier_vs_clean": [], "p99_brain_outlier": [], "p99_brain_clean": []}
    for m in methods
}
for case in cases:
    scan = load_raw_case(case, labels)
    for mod in MODALITIES:
        d = scan.images[mod].astype(np.float64)
        nz = d[d != 0]
        p1, p99 = np.percentile(nz, (1, 99))
        excess.append((d.max() - p99) / (p99 - p1))
        bad = d.copy()
        idx = (
            tuple(np.argwhere(d != 0)[len(np.argwhere(d != 0)) // 2])
            if MODE == "mid"
            else np.unravel_index(np.argmax(d), d.shape)
        )
        bad[idx] = 1e30
        brain = d != 0
        ref = minmax(d)
        for name, f in methods.items():
            c, o = f(d), f(bad)
            keep = np.ones(d.shape, bool)
            keep[idx] = False
            rows[name]["clean_vs_minmax"].append(np.abs(c - ref)[keep].max())
            rows[name]["outlier_vs_clean"].append(np.abs(o - c)[keep].max())
            rows[name]["p99_brain_clean"].append(np.percentile(c[brain], 99))
            rows[name]["p99_brain_outlier"].append(np.percentile(o[brain], 99))
print(
    f"{len(cases)} phantom scans x 4 modalities; clean (max-p99)/(p99-p1): max {max(excess):.3f}, median {np.median(excess):.3f}"
)
print(
    f"{'method':16s} {'max|clean-minmax|':>18s} {'max|outlier-clean|':>19s} {'p99 brain clean':>16s} {'p99 brain w/ 1e30':>18s}"
)
for name, r in rows.items():
    print(
        f"{name:16s} {max(r['clean_vs_minmax']):18.3g} {max(r['outlier_vs_clean']):19.3g} {np.median(r['p99_brain_clean']):16.3f} {np.median(r['p99_brain_outlier']):18.3g}"
    )
