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
# # 08 · Reader study: a visual Turing test
# The paper planned a validation by radiologists but never built the means. This notebook builds the
# **blinded reader-study kit** from the run's real validation scans (`prepared/val/`) and their synthetic
# counterparts (`synthetic/val/`, generated from the same masks): balanced, seeded, randomised panels of
# single sequences and of all four, with axial slices through the lesion and away from it. The folder
# `reader_study/kit/` is what a reader gets (open `index.html`, no server or network needed); the answer
# key stays with the organiser. Real readers' exports go to `reader_study/answers/` and are scored with
# `gliomagen reader-study score`.
#
# Here the kit is scored with **simulated, seeded readers** to show the analysis end to end. Their numbers
# say nothing about the realism of the synthetic images.

# %% tags=["parameters"]
profile = "smoke"
overrides: list[str] = []
run_dir = None

# %%
from gliomagen.config import load_config

cfg = load_config(profile, overrides, run_dir=run_dir)
print(f"profile {cfg.profile}, config hash {cfg.hash}, run folder {cfg.paths.root}")

# %% [markdown]
# ## Build the kit
# Re-running skips the build when nothing changed; a kit that already has answers is never replaced
# silently.

# %%
import pandas as pd

from gliomagen.reader_study.build import build
from gliomagen.reader_study.outputs import SIMULATED, ReaderStudyOutputs, read_key
from gliomagen.reader_study.plots import plot_scores, preview

kit = build(cfg)
print(f"kit {kit.kit_id}: {kit.panels} panels in {kit.kit_dir}\nanswer key: {kit.key_path}")
for row in kit.skipped_cases:
    print(f"not used: {row['case_id']}: {row['reason']}")
key = read_key(kit.key_path)
pd.crosstab([key["kind"], key["location"]], key["truth"], margins=True)  # balanced in every stratum

# %% [markdown]
# The organiser's view of the first panels (with the truth, which the page never shows):

# %%
fig = preview(kit, n=10)

# %% [markdown]
# ## Score simulated readers
# Three seeded readers: one guessing (skill 0.5), two better than chance. Their files go to
# `reader_study/simulated_answers/` and the scores to `metrics/reader_study_simulated_*`, apart from any
# real readers' results.

# %%
from gliomagen.reader_study.score import SUMMARY_COLUMNS, score
from gliomagen.reader_study.simulate import write_simulated_readers

sim_dir = ReaderStudyOutputs(cfg.paths).files.simulated_answers
files = write_simulated_readers(key, sim_dir, skills=(0.5, 0.65, 0.8), seed=cfg.reader_study.seed)
result = score(cfg, answers=[sim_dir], tag=SIMULATED)
columns = ["reader", "stratum", *SUMMARY_COLUMNS[1:]]
result.detection[columns].round(3)

# %% [markdown]
# Realism ratings (1 = clearly artificial, 5 = like a real scan) of real vs synthetic panels, and the
# agreement between readers on the real/synthetic call (Fleiss' kappa for more than two readers):

# %%
ratings = result.ratings[["reader", "stratum", "real_mean", "synthetic_mean", "difference", "mannwhitney_p"]]
print(
    f"agreement: {result.agreement['name']} = {result.agreement['kappa']:.3f} "
    f"({result.agreement['readers']} readers, {result.agreement['panels']} panels)"
)
ratings[ratings["stratum"] == "overall"].round(3)

# %%
fig = plot_scores(result)
