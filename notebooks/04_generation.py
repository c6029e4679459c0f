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
# # 04 · Generation
# The EMA weights of the trained model turn masks into four-modality volumes:
#
# * every **validation mask** → `synthetic/val/<id>/` (for the fidelity metrics and the qualitative figure);
# * the accepted **augmented masks** (at most `generate.n_synthetic`, round 1 first) → `synthetic/train/<aug_id>/`,
#   the synthetic training set for nnU-Net.
#
# Outputs are clamped to [0, 1] and written in the mask's own geometry (same affine, the `-seg` file is the
# conditioning mask), so no flip is needed downstream. Each volume's noise is seeded by
# (generate.seed, id): the result does not depend on batching, sharding (`--shard i/n`, torchrun) or
# resuming. Re-running skips finished volumes.

# %% tags=["parameters"]
profile = "smoke"
overrides: list[str] = []
run_dir = None

# %%
from IPython.display import display

from gliomagen.config import load_config
from gliomagen.generation.outputs import GenerationOutputs, read_manifest
from gliomagen.generation.plots import plot_diffusion_process, plot_real_vs_synthetic, plot_sampler_timing
from gliomagen.generation.sampling import load_setup
from gliomagen.generation.stage import generate
from gliomagen.generation.timing import time_samplers

cfg = load_config(profile, overrides, run_dir=run_dir)
print(f"profile {cfg.profile}, config hash {cfg.hash}, run folder {cfg.paths.root}")
cfg.generate.model_dump()

# %% [markdown]
# ## Load the EMA weights and the sampler

# %%
setup = load_setup(cfg)
print(
    f"checkpoint {cfg.generate.checkpoint} (step {setup.checkpoint_step}, sha256 {setup.checkpoint_sha256[:16]}…), "
    f"sampler {setup.sampler_name} with {setup.steps} steps on {setup.device}"
)

# %% [markdown]
# ## Generate the validation set and the synthetic training set

# %%
summary = generate(cfg, "all", setup=setup)
{k: v for k, v in summary.as_dict().items() if k != "provenance"}

# %%
manifest = read_manifest(GenerationOutputs(cfg.paths))
display(manifest.groupby("split").agg(volumes=("id", "count"), seconds_per_volume=("seconds", "mean")))
manifest.head()

# %% [markdown]
# ## Real vs synthetic (validation cases, all four modalities)
# Each pair of rows shows a real validation case and the volume generated from its real mask.

# %%
fig_real_vs_synthetic = plot_real_vs_synthetic(cfg, n=3)

# %% [markdown]
# ## The forward and reverse diffusion process, with the mask
# Top: noise added to a real volume at increasing *t*. Bottom: the reverse process of the sampler,
# conditioned on the same mask, from pure noise to the generated volume.

# %%
fig_diffusion_process = plot_diffusion_process(cfg, setup, modality="t1c")

# %% [markdown]
# ## Seconds per volume for each sampler
# The paper's ancestral DDPM needs all T network evaluations; DDIM and DPM-Solver++ need far fewer. A
# sampler predicted to take longer than `generate.timing_budget_s` is not run here: its time is
# **extrapolated** from a short measured run (hatched bar, `how` column).

# %%
timing = time_samplers(cfg, setup=setup)
display(timing)
fig_sampler_timing = plot_sampler_timing(timing)

# %% [markdown]
# ## How few network evaluations are enough: the sampler sweep (issue 18)
# Each sampler of the `sweep` section at each number of network evaluations (NFE) generates the first
# `sweep.max_masks` validation masks with the same per-volume seeds as above. Each volume is compared with
# its real volume (corrected MS-SSIM: non-empty axial slices, mean over the four modalities) and, once the run
# has a trained real-only nnU-Net model, re-segmented by it (Dice against the conditioning mask). Per grid cell
# a distribution distance: the radiomics FID of one seeded half of the subjects' real slices against the other
# half's generated slices, beside the same FID against the other half's *real* slices (the real-vs-real floor,
# the fidelity stage's design; mean over modalities). Bands are 95% bootstrap intervals over subjects (over
# subject pairs for the distance: with the smoke grid's 2 masks there is one pair and no interval, which the
# `distance` column says). Per sampler, the recommended NFE is the smallest whose every interval overlaps the
# DDPM reference's. Every sampler clamps x̂₀ and re-derives ε from it (one rule; see
# `gliomagen/diffusion/samplers.py`). The smoke grid is small (`configs/smoke.yaml`: no DDPM reference, which
# costs minutes, so **no reference and no recommendation** here); `gliomagen sweep-samplers --set
# sweep.full_grid=true` runs the full one. Here nnU-Net has not been trained yet, so the re-segmentation Dice
# is "not available"; the last cell of notebook 06 reruns the sweep, which then only adds the Dice.

# %%
from gliomagen.generation.sweep import grid, recommendation_text, sweep_samplers

print("grid:", grid(cfg), "on", cfg.sweep.max_masks or "all", "validation masks")
sweep = sweep_samplers(cfg, setup=setup)
print(
    f"{sweep.generated} generated, {sweep.skipped} skipped, {sweep.seconds:.0f} s "
    f"(distance {sweep.metric_seconds['distance']:.1f} s)"
)
print(f"re-segmentation Dice: {sweep.resegmentation}")
print(f"radiomics FID: {sweep.table['distance'].iloc[0]}")
print(recommendation_text(sweep.recommendation))
display(sweep.table)

# %%
from gliomagen.generation.plots import plot_sweep

fig_sampler_sweep = plot_sweep(sweep.table, recommendation_text(sweep.recommendation))

# %% [markdown]
# ## One volume from any mask: `gliomagen sample`
# `gliomagen sample --mask M.nii.gz --out DIR` (or `gliomagen.sample.sample_mask`) takes one prepared or
# augmented mask in *any* grid and orientation, checks it (label vocabulary with the head label, a 3D
# file, not empty, a head around the lesion, the field of view), resamples it to the model grid with the
# data stage's geometry, generates, and writes the four modalities back in the mask's own grid and affine
# with a provenance JSON. Here: the first validation mask stored with two axes reversed (another voxel
# order, the same anatomy), so that keeping the mask's geometry is visible.

# %%
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

from gliomagen.config import MODALITIES
from gliomagen.generation.jobs import val_jobs
from gliomagen.sample import sample_mask

first = val_jobs(cfg)[0]
src = nib.load(str(first.mask_path))
n0, n2 = src.shape[0], src.shape[2]
reverse = np.array([[-1, 0, 0, n0 - 1], [0, 1, 0, 0], [0, 0, -1, n2 - 1], [0, 0, 0, 1]])  # new voxel -> old
flipped = nib.Nifti1Image(np.asarray(src.dataobj)[::-1, :, ::-1].copy(), src.affine @ reverse)
sample_dir = cfg.paths.root / "sample_demo"
mask_file = sample_dir / "input" / f"{first.id}-seg.nii.gz"
mask_file.parent.mkdir(parents=True, exist_ok=True)
nib.save(flipped, str(mask_file))
record = sample_mask(cfg, mask_file, sample_dir / "output", setup=setup, seed=0)
out = nib.load(str(sample_dir / "output" / f"{first.id}-t1c.nii.gz"))
print(
    f"input: shape {flipped.shape}, axes {nib.aff2axcodes(flipped.affine)}; output t1c: shape {out.shape}, "
    f"axes {nib.aff2axcodes(out.affine)}, same affine as the mask: {np.allclose(out.affine, flipped.affine)}"
)
{k: record[k] for k in ("sampler", "steps", "seed", "input_orientation", "model_grid_shape", "seconds")}

# %%
z = flipped.shape[2] // 2
fig_sample, axes = plt.subplots(1, 5, figsize=(11, 2.6))
for ax, name in zip(axes, [*MODALITIES, "seg"], strict=True):
    vol = np.asarray(nib.load(str(sample_dir / "output" / f"{first.id}-{name}.nii.gz")).dataobj)
    ax.imshow(vol[:, :, z].T, cmap="viridis" if name == "seg" else "gray", origin="lower")
    ax.set_title(name, fontsize=8)
    ax.set_axis_off()
fig_sample.suptitle(
    f"gliomagen sample on {first.id} (two axes reversed on disk), axial slice {z}", fontsize=9
)
