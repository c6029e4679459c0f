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
# # 06 · Downstream segmentation (nnU-Net v2 on six training-data mixes)
#
# Does synthetic data help a segmenter? As in the paper (docs/method.md), nnU-Net v2 (`3d_fullres`, fold
# `all`) is trained on six mixes of real and synthetic scans and evaluated on the **real validation scans
# only**. What this artifact does differently, on purpose:
#
# * real scans are chosen **by patient**, and a guard refuses any synthetic volume generated from a
#   validation mask or a validation patient's mask;
# * the **high-quality subset is measured**, not picked by eye: the real-only model segments every synthetic
#   training volume, and the volumes whose segmentation agrees best with their conditioning mask (mean tumour
#   Dice) are kept;
# * metrics are reported twice: with **the paper's definitions** (restricted confusion matrix, Dice with its
#   empty rule, HD95/ASSD in voxels with empty pairs dropped) and **corrected** (BraTS 2024 regions, mm with
#   voxel spacing, explicit empty cases, lesion-wise metrics), plus paired tests against real-only.
#
# In the smoke profile nnU-Net is made small (200 iterations, a narrow network) so that all six mixes train
# on a CPU in minutes: its numbers exercise the pipeline and are **not** comparable to the paper's. The smoke
# profile trains with AdamW (`nnUNetTrainerGliomaGenAdam`) instead of nnU-Net's SGD: at this size SGD
# (momentum 0.99) first drives every tumour probability to about zero and still predicted no tumour after
# 250-300 iterations (issue 17), while AdamW outlines the lesion after 200 (real-only whole-tumour Dice 0.81 on
# the phantom's four validation scans, measured); the paper profile keeps nnU-Net's default trainer. With shared
# plans (`segment.shared_plans`, smoke) every configuration after the first reuses the first one's plans and
# links the preprocessed files of identical real scans instead of preprocessing them again; the paper
# profile plans and preprocesses every configuration on its own. The timing table says which. After the
# real-only baseline (the plans' source and the HQ scorer), the smoke profile trains two configurations at a
# time on its two cores (`concurrent_with` in the table names the overlapping ones, so their `wall_s` overlap
# and do not add up); the paper profile runs one at a time.

# %% tags=["parameters"]
profile = "smoke"
overrides: list[str] = []
run_dir = None

# %%
import logging

import pandas as pd
from IPython.display import display

from gliomagen.config import load_config
from gliomagen.figures.export import save_figure
from gliomagen.io import read_json
from gliomagen.segmentation import plots
from gliomagen.segmentation.outputs import SegmentationOutputs, load_evaluation, read_hq_scores
from gliomagen.segmentation.pipeline import segment

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
cfg = load_config(profile, overrides, run_dir=run_dir)
outputs = SegmentationOutputs(cfg.paths)
pd.set_option("display.precision", 4)
print(f"profile {cfg.profile}, config hash {cfg.hash}, run folder {cfg.paths.root}")
pd.DataFrame([c.model_dump() for c in cfg.segment.configurations])

# %% [markdown]
# ## Train and evaluate
# Each configuration is exported as an nnU-Net dataset (channels `0000..0003` = t1n, t1c, t2w, t2f), planned,
# preprocessed, trained and used for prediction in its own process. Finished work is skipped, so re-running
# this cell resumes. (`gliomagen segment --configuration NAME` runs one configuration, e.g. per GPU.)

# %%
result = segment(cfg)
timing = result.configuration_timings()


def preprocessing_source(row: pd.Series) -> str:
    """Own plans and preprocessing (paper profile), or plans shared and identical cases linked (smoke)."""
    record = cfg.paths.nnunet / "preprocessed" / str(row.get("dataset_name")) / "gliomagen_reused_cases.json"
    if not record.is_file() or not read_json(record).get("source"):
        return "own plans and preprocessing"
    reused = read_json(record)
    return f"plans of {reused['source']}; {reused['reused']} identical cases linked"


if "dataset_name" in timing:
    timing["preprocessing"] = timing.apply(preprocessing_source, axis=1)
timing[
    [
        c
        for c in (
            "n_real",
            "n_synthetic",
            "preprocessing",
            "plan_preprocess_s",
            "train_s",
            "predict_s",
            "wall_s",
            "concurrent_with",
        )
        if c in timing
    ]
]

# %% [markdown]
# ## The high-quality subset, by a measured score
# Score = mean Dice (over the tumour labels present) between the real-only model's segmentation of a synthetic
# volume and the mask it was generated from. The `segment.hq_count` best volumes are kept.

# %%
hq_scores = read_hq_scores(outputs)
plots.plot_hq_scores(hq_scores)
hq_scores.head(10)

# %% [markdown]
# ## The paper's table (its definitions), ours beside the reported numbers
# Columns as in the paper's Fig. 13: Kappa, accuracy and per-class F1 pooled over the voxels whose ground
# truth is tumour; average Dice over scans and tumour classes (1.0 when both empty); Pearson r of the total
# tumour volume; HD95/ASSD in voxels over the non-empty pairs.

# %%
ev = load_evaluation(outputs)
display(plots.paper_side_by_side(cfg, ev.paper))
ev.paper[["configuration", "n_cases", "hd_pairs_used", "hd_pairs_dropped"]]

# %% [markdown]
# ## Corrected metrics
# BraTS 2024 post-treatment regions (ET, TC = ET+NETC, WT = ET+NETC+SNFH, NETC, SNFH, RC); Dice; HD95 in mm
# (both empty = 0, one empty = the volume's diagonal); lesion-wise Dice that charges missed and spurious
# lesions, and lesion detection F1.

# %%
display(plots.corrected_table(ev.corrected))
ev.corrected[["configuration", "region", "status_counts"]].pivot(index="configuration", columns="region")

# %% [markdown]
# ### Does nnU-Net learn the lesion? Whole-tumour Dice per configuration
# The smoke reproduction's goal (issue 17) is a real-only whole-tumour (WT) Dice of at least 0.7 on the
# phantom's validation scans; `pred_empty` in the status column counts scans where a model predicted no
# tumour at all.

# %%
wt = ev.corrected[ev.corrected["region"] == "WT"].set_index("configuration")[["dice", "status_counts"]]
wt["goal (real-only WT Dice >= 0.7)"] = ""
if "real_only" in wt.index:
    wt.loc["real_only", "goal (real-only WT Dice >= 0.7)"] = (
        "met" if wt.loc["real_only", "dice"] >= 0.7 else "NOT met"
    )
wt

# %% [markdown]
# ### Each mix against real-only (paired by scan)
# Mean difference (mix − real-only), bootstrap confidence interval over scans, Wilcoxon signed-rank p. With
# the smoke profile's four validation scans no difference can be significant.

# %%
if ev.stats.empty:
    print("no paired comparison (the real-only configuration has no predictions)")
else:
    display(
        ev.stats[ev.stats["metric"].isin(["dice", "hd95_mm", "lesion_dice_penalised"])]
        .pivot_table(
            index=["configuration", "region"],
            columns="metric",
            values=["mean_diff", "ci_low", "ci_high", "p_wilcoxon"],
        )
        .round(4)
    )

# %% [markdown]
# ## Boundary distances (Fig. 14): paper definition and corrected

# %%
fig_dist = plots.plot_distances(ev.paper, ev.corrected_per_case)

# %% [markdown]
# ## Confusion matrices (restricted to tumour ground truth, row-normalised)

# %%
classes = ["background", *[lab.name for lab in cfg.tumour_labels]]
fig_cm = plots.plot_confusions(ev.confusion, classes)

# %% [markdown]
# ## Bland–Altman of total tumour volume

# %%
fig_ba = plots.plot_bland_altman(ev.volumes)

# %% [markdown]
# ## Predicted masks per configuration beside the ground truth (Fig. 15)
# Same axial slice (the one with most tumour) for every configuration; background image t1c.

# %%
fig_pred = plots.plot_predictions(cfg)

# %%
figure_dir = cfg.paths.root / "figures" / "segmentation"
for name, fig in {
    "distances": fig_dist,
    "confusion": fig_cm,
    "bland_altman": fig_ba,
    "predictions": fig_pred,
}.items():
    save_figure(fig, figure_dir, name, formats=["png"], dpi=cfg.figures.dpi)
print(f"figures in {figure_dir}; metrics in {cfg.paths.metrics}")

# %% [markdown]
# ## The sampler sweep's re-segmentation Dice (issue 18)
# Notebook 04 ran the sampler sweep before nnU-Net existed, so its re-segmentation Dice was "not available".
# Now the real-only model is trained: rerunning the sweep regenerates nothing (every volume is done) and only
# re-segments the sweep volumes with that model (one nnU-Net prediction job), then rewrites the sweep's table
# and figure. Dice is the mean over the tumour labels present of the prediction against the conditioning mask;
# the interval is a 95% bootstrap over subjects.

# %%
from gliomagen.generation.sweep import recommendation_text, sweep_samplers

sweep = sweep_samplers(cfg)
print(
    f"re-segmentation Dice: {sweep.resegmentation} ({sweep.resegmented} volumes re-segmented in "
    f"{sweep.metric_seconds['resegmentation']:.0f} s; {sweep.generated} generated)"
)
print(recommendation_text(sweep.recommendation))
sweep_columns = ["sampler", "nfe", "seconds_per_volume", "reseg_dice", "reseg_dice_low", "reseg_dice_high"]
sweep_columns += ["ms_ssim", "ms_ssim_low", "ms_ssim_high", "rad_fid", "rad_fid_floor", "rad_fid_ratio"]
sweep.table[sweep_columns].round(4)
