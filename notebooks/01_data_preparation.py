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
# Loads the run configuration. (The data stage itself — phantom, validation, QC, geometry and the
# patient-level split — is built in issue #3.)

# %% tags=["parameters"]
profile = "smoke"
overrides: list[str] = []
run_dir = None

# %%
from gliomagen.config import load_config

cfg = load_config(profile, overrides, run_dir=run_dir)
print(f"profile {cfg.profile}, config hash {cfg.hash}, run folder {cfg.paths.root}")
cfg.model_dump(mode="json")
