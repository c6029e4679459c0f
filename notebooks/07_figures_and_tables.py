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
# # 07 · Figures and tables
# Regenerates every figure and table of the paper (docs/method.md, "Figures and tables") from this run's own
# outputs, into the run folder: figures to `<run>/figures/` (PNG and PDF), tables to `<run>/paper_generated/`
# (LaTeX and Markdown, each stamped with the hashes of the metrics files it was made from), and the key
# numbers to `<run>/paper_generated/numbers.tex`. Every file names its run (profile, config hash) in a footer
# and in its metadata. Where the original reported a value, ours stands beside it with the profile named.
#
# At the end the run is **published**: copied as a whole to `figures/<profile>/` and
# `paper/generated/<profile>/`, which the manuscript in `paper/` includes, with `PUBLISHED.json` naming the
# run. A run whose stages are incomplete is never published. The logic is in `gliomagen/figures/`.

# %% tags=["parameters"]
profile = "smoke"
overrides: list[str] = []
run_dir = None

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, Markdown, display

from gliomagen.config import load_config
from gliomagen.figures.artifacts import ARTIFACTS
from gliomagen.figures.export import stale_outputs
from gliomagen.figures.numbers import collect_numbers
from gliomagen.figures.outputs import FiguresOutputs
from gliomagen.figures.publish import publish
from gliomagen.figures.regenerate import raise_on_failures, regenerate

cfg = load_config(profile, overrides, run_dir=run_dir)
print(f"profile {cfg.profile}, config hash {cfg.hash}, run folder {cfg.paths.root}")
pd.DataFrame([{"name": a.name, "kind": a.kind, "paper": a.paper_ref, "from": a.notebook} for a in ARTIFACTS])

# %% [markdown]
# ## Regenerate everything
# A figure or table that cannot be made is listed with the reason, and the notebook then fails, so a
# reproduction never looks complete when it is not.

# %%
made = regenerate(cfg)
display(made.manifest[["name", "kind", "paper", "status", "message"]])
raise_on_failures(made)
outputs = FiguresOutputs(cfg.paths)
assert not stale_outputs(made.tables_dir, cfg.paths.root), stale_outputs(made.tables_dir, cfg.paths.root)

# %% [markdown]
# ## Tables (as they appear in the paper)

# %%
for art in ARTIFACTS:
    if art.kind == "table":
        text = outputs.table(art.name, "md").read_text().split("\n", 1)[1]
        display(Markdown(f"### {art.name} — {art.paper_ref}\n{text}"))

# %% [markdown]
# ## Key numbers (macros for the manuscript)

# %%
pd.Series(collect_numbers(cfg), name="value").to_frame()

# %% [markdown]
# ## Figures

# %%
for art in ARTIFACTS:
    if art.kind == "figure":
        display(Markdown(f"### {art.name} — {art.paper_ref}"))
        display(Image(filename=str(outputs.figure(art.name, "png")), width=900))
plt.close("all")

# %% [markdown]
# ## Publish this run
# Copies the run's figures and tables, as a whole, to the folders the manuscript includes. `publish`
# refuses (and changes nothing) if a stage's outputs are missing, a figure or table could not be made, or a
# table's sources changed since it was written.

# %%
record = publish(cfg)
print(
    f"published run {record['run_dir']} (config {record['config_hash']})\n"
    f"figures: {cfg.figures_dir}\ntables:  {cfg.tables_dir}\n"
    f"build the manuscript with: make paper PROFILE={cfg.profile}"
)
