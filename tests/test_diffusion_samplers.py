"""Noise schedule and samplers, checked against hand formulas and an exact "oracle" denoiser."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gliomagen.config import load_config
from gliomagen.diffusion.samplers import make_generator, make_sampler
from gliomagen.diffusion.schedule import make_train_scheduler, noisy_examples

T = 50
VAL_T = "train.val_timesteps=[5, 25]"  # must lie in 0..T-1
EPS = "diffusion.prediction=epsilon"  # the oracles predict the noise (the smoke profile may predict x0)


def cosine_alpha_bar(T: int, s: float = 0.008, beta_max: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021) eq. 17, written independently of MONAI: abar_t for t = 0..T-1."""
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    betas = [min(1 - f[t + 1] / f[t], beta_max) for t in range(T)]
    return torch.tensor([math.prod(1 - b for b in betas[: t + 1]) for t in range(T)], dtype=torch.float64)


class Oracle(nn.Module):
    """The ideal noise predictor for a known clean image: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""

    def __init__(self, x0: torch.Tensor, abar: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("x0", x0)
        self.abar = abar.float()
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the sampler a device

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = self.abar[timesteps].view(-1, 1, 1, 1, 1)
        x_t = x[:, : self.x0.shape[1]]
        return (x_t - a.sqrt() * self.x0) / (1 - a).sqrt()


@pytest.fixture
def cfg():
    return load_config("smoke", [f"diffusion.timesteps={T}", VAL_T, EPS, "generate.eta=0.0"])


def test_cosine_schedule_matches_the_formula(cfg) -> None:
    sched = make_train_scheduler(cfg)
    torch.testing.assert_close(sched.alphas_cumprod.double(), cosine_alpha_bar(T), rtol=1e-4, atol=1e-6)
    assert float(sched.betas.max()) <= 0.999 + 1e-7
    capped = make_train_scheduler(
        load_config("smoke", [f"diffusion.timesteps={T}", VAL_T, EPS, "diffusion.beta_max=0.5"])
    )
    torch.testing.assert_close(
        capped.alphas_cumprod.double(), cosine_alpha_bar(T, beta_max=0.5), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize(("name", "steps"), [("ddpm", T), ("ddim", 10), ("ddim", 7), ("dpmpp", 10)])
def test_every_sampler_recovers_the_image_of_an_exact_denoiser(cfg, name: str, steps: int) -> None:
    x0 = torch.rand(2, 4, 6, 5, 4, generator=torch.Generator().manual_seed(1))
    oracle = Oracle(x0, cosine_alpha_bar(T))
    sampler = make_sampler(cfg, name, steps)
    cond = torch.zeros(2, 6, 6, 5, 4)
    out = sampler.sample(oracle, cond, generator=make_generator(0))
    assert out.shape == (2, 4, 6, 5, 4)
    torch.testing.assert_close(out, x0, atol=2e-3, rtol=0)
    assert len(sampler.timesteps) == steps and sampler.timesteps[0] == T - 1


def test_ddim_timesteps_are_evenly_spaced_as_monai_steps_them(cfg) -> None:
    sampler = make_sampler(cfg, "ddim", 7)
    ts = sampler.timesteps
    # MONAI steps from t to t - T // steps; the grid must use the same spacing
    assert all(a - b == T // 7 for a, b in zip(ts, ts[1:], strict=False))
    assert ts[-1] == T - 1 - 6 * (T // 7)


def test_output_is_clamped_to_unit_range(cfg) -> None:
    x0 = torch.full((1, 4, 4, 4, 4), 1.7)  # a denoiser that insists on values above 1
    x0[:, :2] = -0.5
    out = make_sampler(cfg, "ddim", 5).sample(Oracle(x0, cosine_alpha_bar(T)), torch.zeros(1, 6, 4, 4, 4))
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0


def test_samples_are_reproducible_for_a_seed(cfg) -> None:
    x0 = torch.rand(1, 4, 4, 4, 4)
    oracle = Oracle(x0, cosine_alpha_bar(T) * 0.9)  # a wrong denoiser, so the noise matters
    sampler = make_sampler(cfg, "ddpm", T)
    cond = torch.zeros(1, 6, 4, 4, 4)
    a = sampler.sample(oracle, cond, generator=make_generator(3))
    b = sampler.sample(oracle, cond, generator=make_generator(3))
    c = sampler.sample(oracle, cond, generator=make_generator(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampler_errors_are_clear(cfg) -> None:
    with pytest.raises(ValueError, match="ancestral DDPM sampler runs all 50 steps"):
        make_sampler(cfg, "ddpm", 10)
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        make_sampler(cfg, "euler", 10)
    with pytest.raises(ValueError, match=r"steps must be in 1..50"):
        make_sampler(cfg, "ddim", 51)


def test_trajectory_and_forward_process_for_the_figure(cfg) -> None:
    x0 = torch.rand(1, 4, 4, 4, 4)
    states = make_sampler(cfg, "ddim", 10).trajectory(
        Oracle(x0, cosine_alpha_bar(T)), torch.zeros(1, 6, 4, 4, 4), record=4
    )
    assert [s["step"] for s in states] == [0, 3, 6, 9]
    torch.testing.assert_close(states[-1]["x0"], x0, atol=2e-3, rtol=0)
    noisy = noisy_examples(cfg, x0[0], [0, T - 1], seed=0)
    abar = cosine_alpha_bar(T)
    # x_0 is nearly clean, x_{T-1} is nearly pure noise (correlation with x0 ~ sqrt(abar))
    assert float((noisy[0] - x0[0]).abs().max()) < 5 * math.sqrt(1 - abar[0])
    assert float(abar[T - 1]) < 1e-3


# --------------------------------------------------------------------- float64 schedule, clip range, targets
def test_cosine_schedule_is_the_float64_formula_cast_once() -> None:
    """Issue 12.7: MONAI evaluates the cosine in float32 (1e-3 relative error at small t); ours does not."""
    from monai.networks.schedulers import DDPMScheduler

    T_paper = 1000
    cfg = load_config("smoke", [f"diffusion.timesteps={T_paper}", EPS])
    exact = cosine_alpha_bar(T_paper)  # python floats (double), written independently
    ours = make_train_scheduler(cfg).alphas_cumprod
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), exact, rtol=2e-7, atol=1e-12)  # float32 rounding only
    f = [math.cos((t / T_paper + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(T_paper + 1)]
    betas = torch.tensor([min(1 - f[t + 1] / f[t], 0.999) for t in range(T_paper)], dtype=torch.float64)
    torch.testing.assert_close(make_train_scheduler(cfg).betas.double(), betas, rtol=1e-7, atol=0)
    monai = DDPMScheduler(num_train_timesteps=T_paper, schedule="cosine", s=0.008).betas.double()
    assert float(((monai - betas) / betas).abs()[:10].max()) > 1e-4  # what the float64 computation fixes


def test_clip_range_is_the_x0_clamp_of_every_sampler() -> None:
    """Issue 12.8: [0, 1] by default; the original's [-1, 1] lets x0 go below zero."""
    x0 = torch.full((1, 4, 4, 4, 4), -0.5)
    x0[:, 2:] = 0.5
    for name, steps in [("ddpm", T), ("ddim", 5), ("dpmpp", 5)]:
        for clip, low in [("[0, 1]", 0.0), ("[-1, 1]", -0.5)]:
            cfg = load_config(
                "smoke", [f"diffusion.timesteps={T}", VAL_T, EPS, f"generate.clip_range={clip}"]
            )
            out = make_sampler(cfg, name, steps).sample(
                Oracle(x0, cosine_alpha_bar(T)), torch.zeros(1, 6, 4, 4, 4), generator=make_generator(0)
            )
            assert float(out[:, :2].min()) == pytest.approx(low, abs=2e-3), (name, clip)
            assert float(out[:, 2:].mean()) == pytest.approx(0.5, abs=2e-3)
    with pytest.raises(Exception, match="low < high"):
        load_config("smoke", ["generate.clip_range=[1, 0]"])


class SampleOracle(Oracle):
    """The ideal denoiser for the other prediction targets (x0 itself, or v)."""

    def __init__(self, x0: torch.Tensor, abar: torch.Tensor, kind: str) -> None:
        super().__init__(x0, abar)
        self.kind = kind

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        eps = super().forward(x, timesteps)
        if self.kind == "sample":
            return self.x0.expand_as(eps)
        a = self.abar[timesteps].view(-1, 1, 1, 1, 1)
        return a.sqrt() * eps - (1 - a).sqrt() * self.x0


@pytest.mark.parametrize("kind", ["sample", "v_prediction"])
@pytest.mark.parametrize(("name", "steps"), [("ddim", 10), ("dpmpp", 10)])
def test_samplers_follow_the_prediction_target(kind: str, name: str, steps: int) -> None:
    cfg = load_config("smoke", [f"diffusion.timesteps={T}", VAL_T, EPS, f"diffusion.prediction={kind}"])
    x0 = torch.rand(1, 4, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    out = make_sampler(cfg, name, steps).sample(
        SampleOracle(x0, cosine_alpha_bar(T), kind), torch.zeros(1, 6, 4, 4, 4), generator=make_generator(0)
    )
    torch.testing.assert_close(out, x0, atol=2e-3, rtol=0)


# ------------------------------------------------------------------ issue 18: one clipping rule, batched loop
MU, SD = 1.2, 0.3  # a Gaussian data distribution whose mean lies above the clip range: x̂0 is clamped often


class GaussianEps(nn.Module):
    """The exact noise predictor for data x0 ~ N(MU, SD^2) per voxel: E[x0 | x_t] is analytic."""

    def __init__(self, abar: torch.Tensor) -> None:
        super().__init__()
        self.abar = abar.float()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = self.abar[timesteps].view(-1, 1, 1, 1, 1)
        x = x[:, :4]
        mean = MU + SD**2 * a.sqrt() / (SD**2 * a + 1 - a) * (x - a.sqrt() * MU)
        return (x - a.sqrt() * mean) / (1 - a).sqrt()


def _gauss_cfg(*extra: str):
    return load_config("smoke", [f"diffusion.timesteps={T}", VAL_T, EPS, *extra])


def test_ddim_eta_one_over_all_steps_is_the_ddpm_chain_with_clamping() -> None:
    """Same noise, all T steps: DDIM(eta=1) and DDPM agree within float rounding, although x̂0 is clamped."""
    cfg = _gauss_cfg("generate.eta=1.0")
    model = GaussianEps(cosine_alpha_bar(T))
    cond = torch.zeros(2, 6, 6, 5, 4)
    seen: list[float] = []

    def clamped(i: int, t: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        seen.append(float(((x0 == 0) | (x0 == 1)).float().mean()))

    ddpm = make_sampler(cfg, "ddpm", T).sample(model, cond, generator=make_generator(5), callback=clamped)
    ddim = make_sampler(cfg, "ddim", T).sample(model, cond, generator=make_generator(5))
    assert max(seen) > 0.3  # the clamp is active: the test exercises the clipping rule
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=0)


def test_deterministic_samplers_converge_to_one_another_with_clamping() -> None:
    """With the shared rule, DDIM approaches DPM-Solver++ as NFE grows (MONAI's raw-eps DDIM drifted away:
    11 dB at 50 steps, 0.5 dB at T; see the samplers module docstring)."""
    T_big = 200
    cfg = load_config("smoke", [f"diffusion.timesteps={T_big}", "train.val_timesteps=[5, 25]", EPS])
    model = GaussianEps(cosine_alpha_bar(T_big))
    cond = torch.zeros(1, 6, 8, 8, 8)

    def run(name: str, steps: int) -> torch.Tensor:
        return make_sampler(cfg, name, steps).sample(model, cond, generator=make_generator(0))

    ref = run("dpmpp", 100)
    rms = [float(((run("ddim", n) - ref) ** 2).mean().sqrt()) for n in (10, 25, 50, T_big)]
    assert rms == sorted(rms, reverse=True) and rms[-1] < 5e-3
    for name in ("dpmpp", "unipc"):
        assert float(((run(name, 25) - ref) ** 2).mean().sqrt()) < 1e-2


def test_clipped_prediction_rederives_the_noise_from_the_clamped_x0() -> None:
    from gliomagen.diffusion.schedulers import clipped_prediction

    abar = torch.tensor(0.3)
    x0 = torch.tensor([-0.5, 0.25, 1.7])
    eps = torch.tensor([0.3, -1.0, 2.0])
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    for prediction, out in [
        ("epsilon", eps),
        ("sample", x0),
        ("v_prediction", abar.sqrt() * eps - (1 - abar).sqrt() * x0),
    ]:
        x0c, eps_c = clipped_prediction(out, x_t, abar, prediction, (0.0, 1.0))
        torch.testing.assert_close(x0c, x0.clamp(0, 1))
        torch.testing.assert_close(abar.sqrt() * x0c + (1 - abar).sqrt() * eps_c, x_t)  # describes x_t


@pytest.mark.parametrize(("name", "steps"), [("ddpm", T), ("ddim", 7), ("dpmpp", 7), ("unipc", 7)])
def test_every_sampler_is_batched_with_one_generator_per_volume(name: str, steps: int) -> None:
    """A batch with per-volume generators equals each volume's own batch-of-one run (every sampler)."""
    cfg = _gauss_cfg("generate.eta=0.5")
    model = GaussianEps(cosine_alpha_bar(T))
    cond = torch.zeros(3, 6, 4, 4, 4)
    sampler = make_sampler(cfg, name, steps)
    seeds = [11, 12, 13]
    alone = [sampler.sample(model, cond[k : k + 1], generator=make_generator(s)) for k, s in enumerate(seeds)]
    batch = sampler.sample(model, cond, generator=[make_generator(s) for s in seeds])
    torch.testing.assert_close(batch, torch.cat(alone), atol=1e-6, rtol=0)


def test_ddpm_step_is_monais_arithmetic_bit_for_bit() -> None:
    """Our DDPM step repeats MONAI's DDPMScheduler.step operation by operation: identical chains."""
    from monai.networks.schedulers import DDPMScheduler

    from gliomagen.diffusion.schedule import set_schedule

    cfg = _gauss_cfg()
    model = GaussianEps(cosine_alpha_bar(T))
    cond = torch.zeros(1, 6, 4, 4, 4)
    ours = make_sampler(cfg, "ddpm", T).sample(model, cond, generator=make_generator(2))
    monai = DDPMScheduler(num_train_timesteps=T, clip_sample=True, clip_sample_min=0.0, clip_sample_max=1.0)
    set_schedule(monai, cfg)
    monai.set_timesteps(T)
    g = make_generator(2)
    x = torch.randn((1, 4, 4, 4, 4), generator=g)
    with torch.no_grad():
        for t in monai.timesteps:
            eps = model(torch.cat([x, cond], 1), timesteps=torch.full((1,), int(t)))
            x, x0 = monai.step(eps, int(t), x, generator=g)
    assert torch.equal(ours, x0.clamp(0, 1))


def test_monais_raw_eps_ddim_is_not_the_ddpm_chain_when_x0_is_clamped() -> None:
    """The cause of issue 18's anomaly: MONAI's DDIM keeps the raw eps beside the clamped x̂0, so with the
    same noise its eta = 1, all-T chain leaves the DDPM chain (ours stays on it, test above)."""
    from monai.networks.schedulers import DDIMScheduler

    from gliomagen.diffusion.samplers import ddim_steps_offset
    from gliomagen.diffusion.schedule import set_schedule

    cfg = _gauss_cfg()
    model = GaussianEps(cosine_alpha_bar(T))
    cond = torch.zeros(1, 6, 4, 4, 4)
    ddpm = make_sampler(cfg, "ddpm", T).sample(model, cond, generator=make_generator(2))
    monai = DDIMScheduler(
        num_train_timesteps=T, clip_sample=True, steps_offset=ddim_steps_offset(T, T), set_alpha_to_one=True
    )
    monai.clip_sample_values = (0.0, 1.0)
    set_schedule(monai, cfg)
    monai.set_timesteps(T)
    g = make_generator(2)
    x = torch.randn((1, 4, 4, 4, 4), generator=g)
    with torch.no_grad():
        for t in monai.timesteps:
            eps = model(torch.cat([x, cond], 1), timesteps=torch.full((1,), int(t)))
            x, x0 = monai.step(eps, int(t), x, eta=1.0, generator=g)
    assert float((x0.clamp(0, 1) - ddpm).abs().mean()) > 0.05
