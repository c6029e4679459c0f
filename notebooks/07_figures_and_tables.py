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
# Regenerates every figure and table of the paper (PAPER.md §7) from this run's own outputs: figures go to
# `figures/<profile>/` (PNG and PDF), tables to `paper/generated/<profile>/` (LaTeX and Markdown, each
# stamped with the hashes of the metrics files it was made from), and the key numbers to
# `paper/generated/<profile>/numbers.tex`, which the manuscript in `paper/` includes. Where the original
# reported a value, ours stands beside it with the profile named. The logic is in `gliomagen/figures/`.

# %% tags=["parameters"]
profile = "smoke"
overrides: list[str] = []
run_dir = None

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, Markdown, display

from gliomagen.config import load_config
from gliomagen.figures import ARTIFACTS, raise_on_failures, regenerate
from gliomagen.figures.export import stale_outputs
from gliomagen.figures.numbers import collect_numbers

cfg = load_config(profile, overrides, run_dir=run_dir)
print(f"profile {cfg.profile}, config hash {cfg.hash}, run folder {cfg.paths.root}")
pd.DataFrame([{"name": a.name, "kind": a.kind, "paper": a.paper_ref, "from": a.notebook} for a in ARTIFACTS])

# %% [markdown]
# ## Regenerate everything
# A figure or table that cannot be made is listed with the reason, and the notebook then fails, so a
# reproduction never looks complete when it is not.

# %%
manifest = regenerate(cfg)
display(manifest[["name", "kind", "paper", "status", "message"]])
raise_on_failures(manifest)
assert not stale_outputs(cfg.tables_dir, cfg.paths.root), stale_outputs(cfg.tables_dir, cfg.paths.root)

# %% [markdown]
# ## Tables (as they appear in the paper)

# %%
for art in ARTIFACTS:
    if art.kind == "table":
        text = (cfg.tables_dir / f"{art.name}.md").read_text().split("\n", 1)[1]
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
        display(Image(filename=str(cfg.figures_dir / f"{art.name}.png"), width=900))
plt.close("all")
print(
    f"figures: {cfg.figures_dir}\ntables:  {cfg.tables_dir}\nbuild the manuscript with: make paper PROFILE={cfg.profile}"
)
