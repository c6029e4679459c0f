"""The denoiser network and the mask encoding (issue #4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gliomagen.config import load_config
from gliomagen.diffusion.network import (
    build_model,
    enable_grad_checkpointing,
    encode_mask,
    model_summary,
    n_mask_channels,
)


def test_paper_network_matches_the_original_parameter_count_and_flops() -> None:
    cfg = load_config("paper")
    summary = model_summary(cfg)
    # 57,566,020 parameters and 21.29 TFLOP per forward at 192x192x144 (PAPER.md §2, DESIGN.md)
    assert summary["parameters"] == 57_566_020
    assert summary["forward_tflop"] == pytest.approx(21.29, abs=0.01)
    levels = {lvl.block: lvl.shape for lvl in summary["levels"]}
    assert levels["conv_in"] == (1, 64, 192, 192, 144)
    assert levels["middle"] == (1, 256, 12, 12, 9)
    assert levels["out"] == (1, 4, 192, 192, 144)


def test_paper_network_on_meta_device_has_ten_inputs_and_four_outputs() -> None:
    net = build_model(load_config("paper"), device="meta")
    assert net.conv_in.conv.in_channels == 10
    x = torch.empty(2, 10, 32, 32, 32, device="meta")
    assert net(x, torch.zeros(2, device="meta")).shape == (2, 4, 32, 32, 32)


def test_paper_encoding_is_one_hot_of_values_one_to_six_with_a_zero_channel() -> None:
    cfg = load_config("smoke")
    mask = np.array([0, 1, 2, 3, 4, 5], np.uint8).reshape(1, 1, 6)
    enc = encode_mask(mask, cfg)
    assert enc.shape == (6, 1, 1, 6) and n_mask_channels(cfg) == 6
    # channel k is 1 exactly where the mask equals k+1; the sixth (value 6) is always zero
    expected = np.zeros((6, 6))
    for value in range(1, 6):
        expected[value - 1, value] = 1
    np.testing.assert_array_equal(enc[:, 0, 0, :].numpy(), expected)


def test_compact_encoding_drops_the_always_zero_channel() -> None:
    cfg = load_config("smoke", ["model.mask_encoding=compact"])
    mask = torch.tensor([[[0, 5, 1]]], dtype=torch.uint8)
    enc = encode_mask(mask[None], cfg)  # batched input
    assert enc.shape == (1, 5, 1, 1, 3)
    assert enc[0, :, 0, 0, 1].tolist() == [0, 0, 0, 0, 1]
    assert enc[0, :, 0, 0, 0].tolist() == [0, 0, 0, 0, 0]
    assert build_model(cfg, device="meta").conv_in.conv.in_channels == 4 + 5


def test_encoding_follows_the_profile_label_map() -> None:
    labels = (
        "data.labels=[{name: background, source: 0, value: 0, tumour: false},"
        " {name: head, source: null, value: 1, tumour: false}, {name: lesion, source: 1, value: 7}]"
    )
    cfg = load_config("smoke", [labels, "model.mask_encoding=compact"])
    enc = encode_mask(np.array([[[0, 1, 7]]]), cfg)
    assert enc[:, 0, 0, 2].tolist() == [0, 1]
    assert n_mask_channels(load_config("smoke", [labels])) == 3  # paper: values 1..3


def test_unknown_mask_value_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"values \[9\] that are not in the label map"):
        encode_mask(np.array([[[0, 9]]]), load_config("smoke"))


@pytest.mark.parametrize("bf16", [False, True])
def test_every_checkpointing_mode_gives_the_gradients_of_no_checkpointing_bit_for_bit(bf16: bool) -> None:
    """Checkpointing only recomputes: outputs and gradients equal no checkpointing exactly (fp32 and bf16),
    with the paper network's structure (five levels, trilinear upsampling) at 8 channels and 16^3."""
    from gliomagen.diffusion.network import CHECKPOINT_MODES

    cfg = load_config("paper", ["model.channels=[8, 8, 16, 16, 32]", "model.norm_num_groups=8",
                                "model.num_head_channels=32"])  # fmt: skip
    torch.manual_seed(0)
    plain = build_model(cfg)
    with torch.no_grad():  # the output conv starts at zero: perturb so that every gradient is non-zero
        for p in plain.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(1, 10, 16, 16, 16), torch.tensor([10])

    def run(net: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        net.train()
        net.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x, t)
        out.float().square().mean().backward()
        return out.detach(), torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])

    ref_out, ref_grad = run(plain)
    assert (ref_grad != 0).float().mean() > 0.3  # a real test: most gradients are not zero
    for mode in CHECKPOINT_MODES:
        net = build_model(cfg)
        net.load_state_dict(plain.state_dict())
        assert enable_grad_checkpointing(net, mode) == (
            0 if mode == "none" else 27
        )  # 10 down, 2 middle, 15 up
        assert list(net.state_dict()) == list(plain.state_dict())  # same keys: checkpoints stay compatible
        out, grad = run(net)
        assert torch.equal(out, ref_out), mode
        assert torch.equal(grad, ref_grad), mode
    with pytest.raises(ValueError, match="checkpointing mode"):
        enable_grad_checkpointing(plain, "levels")


def test_checkpointing_is_off_in_evaluation_and_without_gradients() -> None:
    cfg = load_config(
        "smoke", ["model.channels=[8, 16]", "model.num_res_blocks=1", "model.num_head_channels=16"]
    )
    net = build_model(cfg)
    enable_grad_checkpointing(net)
    x, t = torch.randn(1, 10, 8, 8, 8), torch.tensor([3])
    with torch.no_grad():
        inference = net(x, t)
    net.eval()
    torch.testing.assert_close(net(x, t), inference, rtol=0, atol=0)


# ------------------------------------------------------------------------- the reference's model options
PAPER_TINY = [
    "model.channels=[8, 16, 16]",
    "model.num_res_blocks=1",
    "model.norm_num_groups=8",
    "model.num_head_channels=16",
]


def test_paper_options_are_on_in_the_paper_profile_and_reported() -> None:
    summary = model_summary(load_config("paper"))
    assert summary["upsample_mode"] == "trilinear"
    assert summary["time_embed_max_period"] == 1000 and summary["zero_init_attention_out"] is True
    smoke = model_summary(load_config("smoke"))
    assert (smoke["upsample_mode"], smoke["time_embed_max_period"]) == ("nearest", 10000)


def test_tiny_paper_network_upsamples_trilinearly_and_zeroes_the_attention_output() -> None:
    from gliomagen.diffusion.network import GliomaGenUNet

    net = build_model(load_config("paper", PAPER_TINY))
    assert isinstance(net, GliomaGenUNet)
    ups = net.upsamplers()
    assert len(ups) == 2 and all(u.mode == "trilinear" and not u.align_corners for u in ups)
    proj = net.middle_block.attention.attn.out_proj
    assert not proj.weight.any() and not proj.bias.any()
    # the upsampler's output is F.interpolate(..., size=2x, mode="trilinear"), the reference's call
    x = torch.randn(1, 16, 3, 4, 5)
    expected = torch.nn.functional.interpolate(x, size=(6, 8, 10), mode="trilinear")
    torch.testing.assert_close(ups[0](x), expected, rtol=0, atol=0)


def test_time_embedding_matches_an_independent_formula_for_both_periods() -> None:
    from monai.networks.nets.diffusion_model_unet import get_timestep_embedding

    from gliomagen.diffusion.network import timestep_embedding

    t = torch.tensor([0, 1, 37, 999])
    dim = 64
    for period in (1000, 10000):
        i = np.arange(dim // 2)
        arg = t.numpy()[:, None].astype(np.float64) * period ** (-i / (dim // 2))[None, :]
        expected = np.concatenate([np.cos(arg), np.sin(arg)], axis=1)
        got = timestep_embedding(t, dim, period)
        np.testing.assert_allclose(got.numpy(), expected, atol=2e-4, rtol=0)  # float32 of t * f at t=999
    # at MONAI's period the embedding is MONAI's, bit for bit
    assert torch.equal(timestep_embedding(t, dim, 10000), get_timestep_embedding(t, dim))
    assert not torch.allclose(timestep_embedding(t, dim, 1000), get_timestep_embedding(t, dim))


def test_network_computes_monai_s_function_with_monai_s_options() -> None:
    """The smoke model's behaviour is unchanged: with the default options the subclass equals MONAI."""
    from monai.networks.nets import DiffusionModelUNet

    cfg = load_config("smoke", PAPER_TINY)
    torch.manual_seed(0)
    ours = build_model(cfg).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    monai = DiffusionModelUNet(
        spatial_dims=3,
        in_channels=10,
        out_channels=4,
        num_res_blocks=1,
        channels=(8, 16, 16),
        attention_levels=(False, False, False),
        norm_num_groups=8,
        norm_eps=1e-5,
        num_head_channels=16,
        include_fc=True,
    ).eval()
    monai.load_state_dict(ours.state_dict())
    x, t = torch.randn(2, 10, 8, 8, 8), torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(ours(x, t), monai(x, t))
        paper = build_model(load_config("paper", PAPER_TINY)).eval()
        paper.load_state_dict(ours.state_dict())
        assert not torch.allclose(paper(x, t), monai(x, t))
