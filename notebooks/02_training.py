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
# # 02 · Training the mask-conditioned 3D diffusion model
# The denoiser is MONAI's `DiffusionModelUNet` configured like the paper's guided-diffusion U-Net. It sees
# the four noisy modalities concatenated with the one-hot mask. The paper profile predicts the noise
# (ε-prediction, cosine schedule, T = 1000, L1 loss, images in [0, 1]), as the original did. The smoke
# profile keeps everything but the target: its network predicts the clean image x₀ (`diffusion.prediction:
# sample`), because in a few hundred CPU steps an ε-model still samples noise while an x₀-model already
# draws the lesion where the mask puts it (measured; see `configs/smoke.yaml` and notebook 05). Training
# follows the paper: Adam, piecewise constant learning rate, EMA of the weights, encoder frozen late in
# training. Everything comes from the profile's `model`, `diffusion` and `train` sections; the same code
# trains the small smoke network on a CPU and the 57.6 M-parameter paper network on GPUs
# (`torchrun -m gliomagen.cli train` for several).

# %% tags=["parameters"]
profile = "smoke"
overrides: list[str] = []
run_dir = None

# %%
import os

# OpenMP threads that wait by spinning slow a shared CPU down several-fold (measured: a smoke step took 3.8 s
# with 2 spinning threads vs 1.7 s with 1 while other processes competed). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd  # noqa: E402

from gliomagen.config import load_config  # noqa: E402
from gliomagen.diffusion import plots  # noqa: E402
from gliomagen.diffusion.network import model_summary  # noqa: E402
from gliomagen.diffusion.outputs import TrainingOutputs, read_run_info  # noqa: E402
from gliomagen.diffusion.train import train  # noqa: E402

cfg = load_config(profile, overrides, run_dir=run_dir)
print(f"profile {cfg.profile}, config hash {cfg.hash}, run folder {cfg.paths.root}")

# %% [markdown]
# ## The network
# The paper configuration is built on PyTorch's `meta` device (no memory, no compute) to count its
# parameters and FLOPs and to trace the tensor shape leaving every level, next to the original's
# 57,566,020 parameters. MONAI's network differs from the reference in ways a count cannot see: nearest
# (not trilinear) upsampling, a time-embedding period of 10000 (not 1000) and no zero-initialised attention
# projection.

# %%
paper_cfg = load_config("paper")
summaries = {"paper": model_summary(paper_cfg), cfg.profile: model_summary(cfg)}
pd.DataFrame(
    {
        name: {
            "parameters": s["parameters"],
            "original (paper)": s["paper_parameters"],
            "difference": s["difference"],
            "input shape": str(s["input_shape"]),
            "TFLOP per forward": round(s["forward_tflop"], 3),
        }
        for name, s in summaries.items()
    }
)

# %%
pd.DataFrame(
    [
        {"profile": name, "block": lvl.block, "output shape": str(lvl.shape), "parameters": lvl.parameters}
        for name, s in summaries.items()
        for lvl in s["levels"]
    ]
).pivot_table(
    index="block", columns="profile", values=["output shape", "parameters"], aggfunc="first", sort=False
)

# %% [markdown]
# ## Training
# Resumes from `checkpoints/last.pt` if an earlier run stopped, and skips training that is already done.
# Checkpoints every `train.checkpoint_every` steps, validation (EMA weights, fixed cases, timesteps and
# noise) every `train.val_every` steps, and preview samples of a fixed validation mask every
# `train.preview_every` steps. Logs (paths in `TrainingOutputs`): the training and validation loss tables, TensorBoard events.

# %%
result = train(cfg)
pd.Series(result.as_dict())

# %% [markdown]
# ## Loss curves
# Training loss per step (noisy: every step draws new timesteps) and the validation loss of the EMA
# weights, which is comparable across steps because its cases, timesteps and noise are fixed. The loss is
# the L1 distance to the profile's target (noise for ε-prediction, the clean image for x₀-prediction), so
# its scale differs between the two.

# %%
plots.loss_curves(cfg)

# %%
plots.val_loss_by_timestep(cfg)

# %% [markdown]
# ## Learning-rate schedule
# The profile's schedule (and the logged values); the paper's is 1e-5 with factors 1, .75, .5, .25, .1 at
# 65k/75k/85k/100k steps and the encoder frozen from 170k.

# %%
plots.lr_plot(cfg)

# %%
plots.lr_plot(paper_cfg)

# %% [markdown]
# ## Samples over training
# The paper's training-progress figure: the EMA model's sample for one fixed validation mask at increasing
# steps (same seed every time), below the real case. Shown at the axial slice with the most tumour. In the
# smoke run the head and the bright lesion appear within the first previews and sharpen later; fine
# anatomy (ventricles, cortex) stays blurred at this budget.

# %%
plots.preview_grid(cfg)

# %% [markdown]
# ## Speed
# Wall-clock seconds per optimiser step on this run's device (validation, previews and checkpoints
# excluded). `benchmarks/` has measured step times and memory for bf16 and gradient checkpointing.

# %%
plots.seconds_per_step_plot(cfg)

# %%
log, _ = plots.read_logs(cfg)
pd.Series(
    {
        "steps logged": len(log),
        "median seconds/step": log["seconds"].median(),
        "total training seconds": log["seconds"].sum(),
        "device": read_run_info(TrainingOutputs(cfg.paths))["device"],
    }
)
