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
# # 03 · Mask augmentation
# The paper enlarges the training set by generating images from **new masks**: each training mask is
# augmented twice. A try flips the mask left-right with probability 0.5 (the left-right axis is read from
# the affine, the array is mirrored about the volume centre and the affine kept, so the lesion changes
# hemisphere), scales it isotropically by *s* ~ U(0.98, 1.02) about the centre with nearest-neighbour
# interpolation, retries the scale until no head voxel touches the volume border, and is **discarded** if
# any label of the source mask vanished. The paper tried 2 × 1235 = 2470 and kept **2124**.
#
# Every try has its own random stream, seeded by (augment.seed, source id, round), so the masks do not
# depend on the order, the worker count or a resumed run. Optional extras (rotation, elastic
# deformation, moving the lesion inside the head) are off in the paper and smoke profiles.

# %% tags=["parameters"]
profile = "smoke"
overrides: list[str] = []
run_dir = None

# %%
import pandas as pd
from IPython.display import display

from gliomagen.augment.outputs import read_manifest
from gliomagen.augment.plots import (
    plot_augmentation_examples,
    plot_augmentation_parameters,
    plot_label_volume_changes,
)
from gliomagen.augment.stage import augment
from gliomagen.config import load_config

cfg = load_config(profile, overrides, run_dir=run_dir)
print(f"profile {cfg.profile}, config hash {cfg.hash}, run folder {cfg.paths.root}")
cfg.augment.model_dump()

# %% [markdown]
# ## Run the augmentation (skips tries that are already done)

# %%
summary = augment(cfg)
manifest = read_manifest(cfg)
manifest.head(8)

# %% [markdown]
# ## Acceptance statistics, beside the paper's

# %%
paper = summary.paper
display(
    pd.DataFrame(
        {
            "this run": [summary.tried, summary.accepted, summary.discarded, summary.acceptance_rate],
            "paper": [paper["tried"], paper["accepted"], paper["discarded"], paper["acceptance_rate"]],
        },
        index=["tried", "accepted", "discarded", "acceptance rate"],
    ).round(3)
)
print("discard reasons:", summary.discard_reasons or "none")
print(f"mean attempts per try: {summary.mean_attempts:.2f}; flipped: {summary.flipped} of {summary.tried}")
print(
    f"the scale range moves a voxel at the grid edge by at most {summary.max_scale_shift_voxels:.2f} voxels; "
    f"{summary.unchanged_by_resampling} of {summary.tried} tries were not changed by the resampling "
    "(below half a voxel nearest-neighbour scaling is the identity: then only the flip changes the mask)"
)

# %%
fig_augmentation_parameters = plot_augmentation_parameters(cfg)

# %% [markdown]
# ## Before and after
# Left: the source T2-FLAIR with its lesion; middle: the augmented mask; right: the lesion outlines of the
# source (cyan) and the augmented mask (red) on the same axial slice — a flipped try moves the lesion to the
# other hemisphere.

# %%
fig_augmentation_examples = plot_augmentation_examples(cfg, n=4)

# %% [markdown]
# ## Label-volume changes
# With nearest-neighbour scaling, each label's volume should change by about *s*³; small labels scatter
# more because they are a few voxels.

# %%
fig_label_volume_changes = plot_label_volume_changes(cfg)

# %%
accepted = manifest[manifest["status"] == "accepted"]
names = [lab.name for lab in cfg.data.labels if lab.value != 0]
changes = pd.DataFrame(
    {
        name: (accepted[f"voxels_{name}_aug"].astype(float) / accepted[f"voxels_{name}_source"].astype(float))
        .replace([float("inf")], float("nan"))
        .describe()[["mean", "std", "min", "max"]]
        for name in names
    }
).T.round(3)
changes
