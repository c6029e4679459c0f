# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Fidelity
# How close are the generated validation volumes to the real ones they were generated from (same mask)?
# Per modality, on every validation pair:
#
# * **MS-SSIM** — the paper's definition (2D, every axial slice, window 11, data range 1, the standard 5 scale
#   weights as `pytorch_msssim` uses them, mean ± `np.std` over slices) and a corrected one (empty slices
#   excluded, mean over subjects with a 95% interval from resampling *subjects*), plus 3D MS-SSIM, SSIM and
#   PSNR per subject.
# * **FID and KID** on slice features, once per feature extractor. *Paper definition*, as the original
#   computed it: every slice pooled; its FID "±" is `np.std` of the paired per-slice feature distances and
#   its KID "±" `np.std` over 10 *disjoint* subsets of one seeded permutation — spreads, **not**
#   uncertainties of FID/KID. *Corrected*: empty slices excluded, 95% interval from resampling subjects
#   (slices of one subject are not independent), 10 seeded subsets of up to 1000 slices.
# * **FRD**, the Fréchet Radiomics Distance (`frd-score`), which needs no downloaded network weights.
# * **Real-vs-real floor** for every corrected metric: the validation subjects split into two seeded halves,
#   real against real. A synthetic set cannot be told apart from real data by a metric once it scores near
#   this floor. The ratio *synthetic / real-vs-real* compares the same subjects (second half's generated
#   volumes in place of their real ones), with an interval from resampling subject pairs.
#
# Every definition and why paper and corrected modes differ: `docs/metrics.md`.
#
# Extractors: `inception-torchvision` is the paper's; `inception-fid` the standard FID network;
# `radiomics` (pyradiomics texture features) needs no download. Offline (the smoke profile on CPU) the
# Inception weights are absent, so their rows say *not available* and the FID/KID numbers come from
# `radiomics` — which is **not comparable in scale** to the paper's Inception FID.

# %% tags=["parameters"]
profile = "smoke"
overrides: list[str] = []
run_dir = None

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from gliomagen.config import load_config
from gliomagen.fidelity.conditioning import goals_failed, summarise
from gliomagen.fidelity.evaluate import run_fidelity
from gliomagen.fidelity.outputs import read_per_slice, read_per_subject
from gliomagen.fidelity.plots import (
    plot_intervals,
    plot_mask_following,
    plot_per_subject,
    plot_slice_pairs,
    plot_slice_profile,
)
from gliomagen.fidelity.report import additional_table, extractor_summary, fidelity_table

cfg = load_config(profile, overrides, run_dir=run_dir)
print(f"profile {cfg.profile}, config hash {cfg.hash}, run folder {cfg.paths.root}")
cfg.fidelity.model_dump()

# %% [markdown]
# ## Run the evaluation
# The stage (`gliomagen fidelity`) writes the results, the per-subject and per-slice tables and the
# mask-following measures into `metrics/` (`stage.outputs` names each file); a finished evaluation with the
# same configuration and inputs is loaded instead of recomputed.

# %%
stage = run_fidelity(cfg)
results = stage.results
print(f"{len(results.subjects)} validation pairs evaluated; skipped: {results.skipped or 'none'}")
print(f"results: {stage.outputs.results_json}")
display(extractor_summary(results))
pd.Series(results.settings)

# %% [markdown]
# ## The fidelity table in the paper's layout (Fig. 11)
# One table per extractor that produced numbers. The paper's column is what it reported (48 BraTS scans,
# torchvision Inception); ours are labelled with the profile and extractor. Corrected, real-vs-real and ratio
# cells read `estimate [95% CI]`; the *mean* row is mean ± SD over the four modalities, as in the paper (the
# ratio's mean row: the mean of the four ratios). For MS-SSIM a ratio above 1 means a generated volume is
# closer to its own real volume than two real subjects are to each other; for FID/KID a ratio near 1 means
# the metric cannot tell the generated set from real data at this sample size.

# %%
available = results.available_extractors()
for name in available:
    print(f"\nFID/KID extractor: {name}")
    display(fidelity_table(results, name))
for name in sorted(set(results.extractors) - set(available)):
    print(f"{name}: {results.extractors[name]['status']}")

# %% [markdown]
# ## What the paper did not report: 3D structure and the Fréchet Radiomics Distance
# Each metric beside its real-vs-real floor and the ratio (for FRD, which is a log, the ratio of the squared
# distances; FRD has no interval because `frd-score` extracts its features anew for each comparison).

# %%
additional_table(results)

# %% [markdown]
# ## Per-subject distributions
# The unit of evidence is the subject: with few validation subjects the intervals above are wide.

# %%
per_subject = read_per_subject(stage.outputs)
per_slice = read_per_slice(stage.outputs)
fig_subjects = plot_per_subject(per_subject, title=f"{cfg.profile}: per-subject fidelity")
display(fig_subjects)
plt.close(fig_subjects)

# %% [markdown]
# ## Why empty slices must go: MS-SSIM along the axial axis
# Padding slices outside the head are empty in both volumes and score MS-SSIM ≈ 1; including them (the
# paper's definition) raises the mean and the SD.

# %%
fig_profile = plot_slice_profile(per_slice, title=f"{cfg.profile}: 2D MS-SSIM per axial slice")
display(fig_profile)
plt.close(fig_profile)
display(
    per_subject.groupby("modality")[
        ["ms_ssim_2d_all_mean", "ms_ssim_2d_nonempty_mean", "n_slices", "n_nonempty"]
    ]
    .mean()
    .round(4)
)

# %% [markdown]
# ## FID with honest uncertainty
# Corrected FID per modality with its subject-bootstrap interval, for every extractor that ran.

# %%
fig_intervals = plot_intervals(results, "FID")
display(fig_intervals)
plt.close(fig_intervals)

# %% [markdown]
# ## Real and generated slices
# Axial slices through the largest tumour cross-section; each generated volume comes from the real case's mask.

# %%
fig_pairs = plot_slice_pairs(
    cfg, results.subjects[:3], title=f"{cfg.profile}: real vs generated (validation)"
)
display(fig_pairs)
plt.close(fig_pairs)

# %% [markdown]
# ## Do the generated volumes follow their masks?
# MS-SSIM and FID say how alike two images look, not whether the lesion is where the mask puts it. Three
# direct measures per validation case and modality (`gliomagen/fidelity/conditioning.py`; the stage above
# computed them, `stage.conditioning`):
#
# * **lesion contrast** = mean inside the tumour labels ÷ mean in the rest of the head, real and synthetic;
#   `contrast_error` = |synthetic − real| ÷ |real − 1| (0: the real contrast, 1: no lesion at all). Only
#   t2w and t2f are judged, where the oedema is bright (t1n/t1c lesions barely differ from the head, so
#   their ratio of departures is unstable);
# * **Pearson r inside the head**, synthetic vs real, beside two references that know nothing of the case:
#   the *real-vs-real floor* (the real case against a real validation case of another patient: another
#   head, anatomy and lesion) and the *template* (the real case against the voxelwise mean of the training
#   volumes: the average anatomy). A generator that uses the mask beats both;
# * **head ÷ background** mean intensity (the background must stay dark).
#
# The goals of the smoke reproduction: contrast error ≤ 0.3 for t2w and t2f (median over cases), median
# r ≥ 0.5 in every modality and above both references, head ÷ background ≥ 10 in every case.

# %%
conditioning = stage.conditioning
display(conditioning.round(3))
conditioning_summary = summarise(conditioning)
display(conditioning_summary.round(3))
print("goals not met:", goals_failed(conditioning_summary) or "none")

# %% [markdown]
# Every validation case: real (upper row) and generated from its mask (lower row), the tumour outline of
# the mask in red on every panel, the lesion contrast (and r) in the panel titles.
#
# What the smoke run shows: the generated head has the real outline and a dark background, and the lesion
# is bright inside the mask's outline in t2w and t2f. The internal anatomy (ventricles, sulci) is smooth,
# not the patient's: the phantom warps it per patient and the mask does not encode it. In t2w, where the
# CSF is brightest, that anatomy carries most of the voxel variance, so every r is low there, the two
# references included: the tables above give each case, and the list printed above names the goals this
# run misses (in the smoke runs so far: t2w's median r, above both references but below 0.5).

# %%
fig_mask_following = plot_mask_following(cfg, conditioning)
display(fig_mask_following)
plt.close(fig_mask_following)
