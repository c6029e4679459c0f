"""The original's checkpoint layout: mapping checked against an independent forward, strict import, CLI.

A random project network is written in the original's layout with the inverse mapping; the original's
forward, re-stated independently in ``original_unet_reference.py`` from the original's keys, must agree
with the project's MONAI network, and the import must give the project weights back bit for bit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from original_unet_reference import OriginalUNet

from gliomagen.cli import main
from gliomagen.config import Config, load_config
from gliomagen.diffusion.checkpoint import CheckpointError, read_checkpoint
from gliomagen.diffusion.import_weights import (
    MAPPING_VERSION,
    PREFIX,
    WeightsImportError,
    import_weights,
    join_qkv,
    module_pairs,
    original_checkpoint,
    project_to_original,
    split_qkv,
)
from gliomagen.diffusion.network import build_model
from gliomagen.io import file_sha256

TINY = [
    "model.channels=[8, 16]",
    "model.num_res_blocks=1",
    "model.norm_num_groups=8",
    "model.num_head_channels=16",
    "data.target_shape=[16, 16, 16]",
    "diffusion.timesteps=20",
    "train.val_timesteps=[5, 15]",
    "train.preview_steps=5",
    "generate.sampler=ddim",
    "generate.steps=2",
    "runtime.device=cpu",
]


def tiny(tmp_path: Path, *extra: str) -> Config:
    """The paper profile (trilinear, period 1000, zero-init attention) shrunk to an 8/16-channel net."""
    return load_config("paper", [*TINY, *extra], run_dir=tmp_path / "run")


def random_net(cfg: Config, seed: int) -> torch.nn.Module:
    """The profile's network with every parameter random (zero-initialised layers too)."""
    torch.manual_seed(seed)
    net = build_model(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return net.eval()


def sets(items: list[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        out += ["--set", item]
    return out


# ------------------------------------------------------------------------------------ the mapping itself
@pytest.mark.parametrize("heads", [1, 2])
def test_mapped_network_computes_the_originals_function(tmp_path: Path, heads: int) -> None:
    cfg = tiny(tmp_path, f"model.num_head_channels={16 // heads}")
    net = random_net(cfg, seed=heads)
    original = project_to_original(net.state_dict(), cfg)
    reference = OriginalUNet(original, [8, 16], 1, groups=8, heads=heads, period=1000)
    x = torch.randn(2, 10, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 17])
    with torch.no_grad():
        ours, theirs = net(x, t), reference(x, t)
    assert float(theirs.abs().max()) > 0.1  # a non-trivial output
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    if heads > 1:  # the head ordering matters: the "new" order does not compute the original's function
        wrong = OriginalUNet(project_to_original(net.state_dict(), cfg, order="new"), [8, 16], 1, 8, heads)
        with torch.no_grad():
            assert float((wrong(x, t) - theirs).abs().max()) > 1e-3


def test_monai_defaults_do_not_compute_the_originals_function(tmp_path: Path) -> None:
    cfg = tiny(tmp_path)
    net = random_net(cfg, seed=0)
    reference = OriginalUNet(project_to_original(net.state_dict(), cfg), [8, 16], 1, groups=8, heads=1)
    monai = build_model(
        tiny(tmp_path, "model.upsample_mode=nearest", "model.time_embed_max_period=10000")
    ).eval()
    monai.load_state_dict(net.state_dict())
    x, t = torch.randn(1, 10, 8, 8, 8), torch.tensor([5])
    with torch.no_grad():
        assert float((monai(x, t) - reference(x, t)).abs().max()) > 1e-3


def test_qkv_split_orders() -> None:
    w = torch.arange(6 * 4 * 1, dtype=torch.float32).reshape(12, 2, 1)  # 3C = 12 rows, C = 4, 2 heads
    q, k, v = split_qkv(w, heads=2, order="legacy")
    # legacy: rows (head, qkv, ch): head 0 has rows 0-1 (q), 2-3 (k), 4-5 (v); head 1 rows 6-11
    assert torch.equal(q, torch.cat([w[0:2], w[6:8]]).squeeze(-1))
    assert torch.equal(v, torch.cat([w[4:6], w[10:12]]).squeeze(-1))
    qn, _, _ = split_qkv(w, heads=2, order="new")
    assert torch.equal(qn, w[0:4].squeeze(-1))
    for order in ("legacy", "new"):
        assert torch.equal(join_qkv(*split_qkv(w, 2, order), heads=2, order=order), w.squeeze(-1))
    q1, _, _ = split_qkv(w, heads=1, order="legacy")
    assert torch.equal(q1, split_qkv(w, heads=1, order="new")[0])  # one head: both orders agree


def test_paper_layout_has_the_originals_block_indices() -> None:
    pairs = {o: p for o, p, _ in module_pairs(load_config("paper"))}
    # 5 levels x 2 res-blocks + 4 downsamplers + the input conv = input_blocks 0..14; 5 x 3 output blocks
    assert pairs["input_blocks.3.0.op"] == "down_blocks.0.downsampler.op.conv"
    assert pairs["input_blocks.14.0"] == "down_blocks.4.resnets.1"
    assert pairs["output_blocks.2.1.conv"] == "up_blocks.0.upsampler.postconv.conv"
    assert pairs["output_blocks.14.0"] == "up_blocks.4.resnets.2"
    assert "output_blocks.14.1.conv" not in pairs and "output_blocks.15.0" not in pairs


# --------------------------------------------------------------------------------------------- import
@pytest.fixture
def original_file(tmp_path: Path) -> tuple[Config, Path, dict, dict]:
    cfg = tiny(tmp_path)
    model, ema = random_net(cfg, 1).state_dict(), random_net(cfg, 2).state_dict()
    path = tmp_path / "model-98.pt"
    torch.save(original_checkpoint(model, cfg, step=245_000, ema=ema), path)
    return cfg, path, model, ema


def test_import_gives_the_weights_back_bit_for_bit(original_file, tmp_path: Path) -> None:
    cfg, src, model, ema = original_file
    record = import_weights(src, tmp_path / "ema.pt", cfg)
    ckpt = read_checkpoint(tmp_path / "ema.pt")
    for key, value in ema.items():
        assert torch.equal(ckpt["ema"][f"module.{key}"], value), key
    assert record["source_sha256"] == file_sha256(src) and record["source_step"] == 245_000
    assert record["mapping_version"] == MAPPING_VERSION and record["which"] == "ema"
    assert json.loads(ckpt["imported"]) == record and ckpt["input_orientation"] == "RAS"
    assert ckpt["config_hash"] == cfg.hash and ckpt["step"] == 245_000
    import gliomagen

    net = gliomagen.load_denoiser(tmp_path / "ema.pt", profile="paper", overrides=TINY)
    assert not net.training and torch.equal(net.state_dict()["out.2.conv.weight"], ema["out.2.conv.weight"])
    with pytest.raises(CheckpointError, match=r"model\.channels: checkpoint \[8, 16\] vs config"):
        gliomagen.load_denoiser(
            tmp_path / "ema.pt", profile="paper", overrides=[*TINY, "model.channels=[8, 32]"]
        )
    import_weights(src, tmp_path / "model.pt", cfg, which="model")
    raw = read_checkpoint(tmp_path / "model.pt")["ema"]
    assert all(torch.equal(raw[f"module.{k}"], v) for k, v in model.items())


def test_meddpm_layout_without_alphas_imports_too(tmp_path: Path) -> None:
    cfg = tiny(tmp_path)
    state = random_net(cfg, 3).state_dict()
    src = tmp_path / "meddpm.pt"
    torch.save(original_checkpoint(state, cfg, step=5, with_alphas=False), src)
    import_weights(src, tmp_path / "out.pt", cfg)


def _resave(src: Path, dst: Path, edit) -> Path:
    raw = torch.load(src, weights_only=True)
    edit(raw["ema"])
    torch.save(raw, dst)
    return dst


def test_wrong_key_shape_extra_key_and_schedule_are_refused(original_file, tmp_path: Path) -> None:
    cfg, src, _, _ = original_file
    qkv = f"{PREFIX}middle_block.1.qkv.weight"

    def rename(sd: dict) -> None:
        sd[f"{PREFIX}middle_block.1.qkv_renamed.weight"] = sd.pop(qkv)

    def reshape(sd: dict) -> None:
        sd[qkv] = sd[qkv][:-3]

    def extra(sd: dict) -> None:
        sd[f"{PREFIX}label_emb.weight"] = torch.zeros(1, 32)

    def schedule(sd: dict) -> None:
        sd["betas"] = sd["betas"] * 1.01

    cases = [
        (rename, r"key denoise_fn\.middle_block\.1\.qkv\.weight is missing"),
        (
            reshape,
            r"key denoise_fn\.middle_block\.1\.qkv\.weight has shape \(45, 16, 1\).*needs \(48, 16, 1\)",
        ),
        (extra, r"key denoise_fn\.label_emb\.weight is not part of the profile's network"),
        (schedule, r"schedule buffer betas differs from the profile's cosine schedule"),
    ]
    for k, (edit, message) in enumerate(cases):
        bad = _resave(src, tmp_path / f"bad{k}.pt", edit)
        with pytest.raises(WeightsImportError, match=message):
            import_weights(bad, tmp_path / f"out{k}.pt", cfg)
        assert not (tmp_path / f"out{k}.pt").exists()
    other = tiny(tmp_path, "diffusion.timesteps=50")  # another T: the buffers have another length
    with pytest.raises(WeightsImportError, match=r"betas has shape \(20,\).*\(50,\).*timesteps=50"):
        import_weights(src, tmp_path / "t.pt", other)
    wider = tiny(tmp_path, "model.channels=[8, 24]", "model.num_head_channels=24")
    with pytest.raises(WeightsImportError, match=r"has shape .* the profile's network needs"):
        import_weights(src, tmp_path / "w.pt", wider)


class _Payload:
    """Unpickling this runs ``touch marker`` (what a forged checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_and_never_runs(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    src = tmp_path / "forged.pt"
    torch.save({"step": 1, "model": {}, "ema": _Payload(marker)}, src)
    cfg = tiny(tmp_path)
    with pytest.raises(
        CheckpointError, match=rf"refused to load {src}: it contains objects other than tensors"
    ):
        import_weights(src, tmp_path / "x.pt", cfg)
    code = main(["import-weights", str(src), "--out", str(tmp_path / "x.pt"), *sets(TINY)])
    err = capsys.readouterr().err
    assert code == 2 and "possibly unsafe" in err and "Traceback" not in err
    assert not marker.exists()


def test_cli_import_weights(original_file, tmp_path: Path, capsys) -> None:
    _, src, _, ema = original_file
    out = tmp_path / "imported.pt"
    assert main(["import-weights", str(src), "--out", str(out), *sets(TINY)]) == 0
    assert "imported ema weights" in capsys.readouterr().out
    ckpt = read_checkpoint(out)
    assert torch.equal(ckpt["ema"]["module.conv_in.conv.weight"], ema["conv_in.conv.weight"])
    code = main(["import-weights", str(tmp_path / "missing.pt"), "--out", str(out), *sets(TINY)])
    assert code == 2 and "missing.pt does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------------- import + sample e2e
def lps_mask(path: Path, shape: tuple[int, int, int] = (20, 24, 18)) -> tuple[np.ndarray, np.ndarray]:
    """A prepared-style mask (head ellipsoid + lesion) stored like BraTS (axes towards L, P, S), 2 mm."""
    grid = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    r = np.array(shape) * 0.33
    mask = ((((grid - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1).astype(np.uint8)
    lesion = ((grid - (c + [2, 1, 0])[:, None, None, None]) ** 2).sum(0)
    mask[lesion <= 6] = 3
    mask[lesion <= 2] = 4
    mask[lesion <= 0.5] = 2
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    affine[:3, 3] = [20.0, 30.0, -15.0]
    nib.save(nib.Nifti1Image(mask, affine), str(path))
    return mask, affine


def test_import_then_sample_end_to_end_in_the_masks_geometry(original_file, tmp_path: Path) -> None:
    _, src, _, _ = original_file
    ckpt = tmp_path / "imported.pt"
    assert main(["import-weights", str(src), "--out", str(ckpt), *sets(TINY)]) == 0
    mask, affine = lps_mask(tmp_path / "case-seg.nii.gz")
    out = tmp_path / "out"
    argv = ["sample", "--profile", "paper", *sets(TINY), "--mask", str(tmp_path / "case-seg.nii.gz")]
    argv += ["--checkpoint", str(ckpt), "--seed", "3", "--out", str(out)]
    assert main(argv) == 0
    for modality in ("t1n", "t1c", "t2w", "t2f"):
        img = nib.load(str(out / f"case-{modality}.nii.gz"))
        assert img.shape == mask.shape
        np.testing.assert_allclose(img.affine, affine)
        data = np.asarray(img.dataobj)
        assert data.dtype == np.float32 and data.min() >= 0 and data.max() <= 1 and data.std() > 0
    seg = nib.load(str(out / "case-seg.nii.gz"))
    np.testing.assert_array_equal(np.asarray(seg.dataobj), mask)
    prov = json.loads((out / "case-provenance.json").read_text())
    assert (
        prov["input_orientation"] == "RAS" and prov["seed"] == 3 and prov["model_grid_shape"] == [16, 16, 16]
    )
    assert prov["checkpoint_sha256"] == file_sha256(ckpt) and prov["steps"] == 2
    # the same seed gives the same volume
    assert main([*argv[:-1], str(tmp_path / "again")]) == 0
    a = np.asarray(nib.load(str(out / "case-t2f.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(tmp_path / "again" / "case-t2f.nii.gz")).dataobj)
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_paper_network_computes_the_originals_function() -> None:
    """The paper's exact network (57,566,020 parameters, five levels, one head) on a small grid."""
    cfg = load_config("paper")
    net = random_net(cfg, seed=5)
    with torch.no_grad():  # keep activations moderate through 5 levels: small weights
        for p in net.parameters():
            p.mul_(0.2)
    original = project_to_original(net.state_dict(), cfg)
    assert sum(v.numel() for v in original.values()) == 57_566_020
    reference = OriginalUNet(original, [64, 64, 128, 192, 256], 2, groups=32, heads=1, period=1000)
    x = torch.randn(1, 10, 32, 32, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([421])
    with torch.no_grad():
        ours, theirs = net(x, t), reference(x, t)
    scale = float(theirs.abs().max())
    assert scale > 1e-3
    torch.testing.assert_close(ours, theirs, atol=1e-5 * max(scale, 1.0), rtol=1e-4)
