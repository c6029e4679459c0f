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
# # 01 · Data preparation
# BraTS 2024 post-treatment glioma scans (or, in the `smoke` profile, the built-in **phantom** — synthetic
# MNI152-based volumes laid out like BraTS, *not patient data*) are validated, relabelled (tumour labels
# +1, a **head** label computed once per scan), min–max normalised, rescaled isotropically and centre
# padded to the target grid **with the correct affine**, checked by automatic QC and split **by patient**.
# The logic lives in `gliomagen.data` (see `gliomagen/data/prepare.py`); this notebook runs it and shows
# the result.

# %% tags=["parameters"]
profile = "smoke"
overrides: list[str] = []
run_dir = None

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from gliomagen.config import load_config
from gliomagen.data import plots
from gliomagen.data.outputs import read_cases_table, usable_cases
from gliomagen.data.prepare import prepare

cfg = load_config(profile, overrides, run_dir=run_dir)
print(f"profile {cfg.profile}, config hash {cfg.hash}, run folder {cfg.paths.root}")
pd.DataFrame([lab.model_dump() for lab in cfg.data.labels]).astype({"source": "Int64"})  # the label map

# %% [markdown]
# ## Run the stage
# Re-running skips every case that is already prepared with the same settings; only the split is redone.

# %%
summary = prepare(cfg)
print(summary.text())

# %% [markdown]
# ## Dataset overview
# Scans and patients per split and QC outcome. `excluded` holds invalid scans and scans with a QC flag
# listed in `data.qc.exclude`; no patient has scans in both `train` and `val`.

# %%
table = read_cases_table(cfg)
plots.overview(table)

# %%
problems = table[table["qc_status"] != "ok"][["id", "qc_status", "split", "qc_reason"]]
display(Markdown("Every scan passed validation and QC." if problems.empty else "**Scans with problems**"))
problems

# %% [markdown]
# ## Label volumes
# Tumour label volumes of the usable scans on the prepared grid (ml = voxels × voxel volume).

# %%
volumes = plots.label_volumes(table, cfg)
plots.plot_label_volumes(volumes)
plt.show()
volumes.groupby(["label", "split"])["ml"].describe()[["count", "mean", "50%", "max"]].round(1)

# %% [markdown]
# ## The head label, before and after
# The rule of docs/method.md ("Data") applied once per scan to `data.head.source`: Otsu threshold →
# closing → hole filling → largest component → background inside it becomes *head*; tumour labels are kept.

# %%
first = table[table["split"] == "train"]["source"].iloc[0]
plots.plot_head_label(cfg, first)
plt.show()

# %% [markdown]
# ## Prepared cases: four modalities and the mask
# Axial slice with the most lesion, on the prepared grid (values in [0, 1]).

# %%
shown = usable_cases(cfg, "train")[:2] + usable_cases(cfg, "val")[:1]
plots.plot_cases(cfg, shown)
plt.show()
