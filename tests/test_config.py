"""Config loading: validation messages, override precedence, hashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from gliomagen.config import ConfigError, config_hash, load_config, parse_override


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_profiles_load(profile: str) -> None:
    cfg = load_config(profile)
    assert cfg.profile == profile
    assert [lab.value for lab in cfg.data.labels] == [0, 1, 2, 3, 4, 5]
    assert cfg.paths.root.name == profile


def test_paper_profile_matches_paper() -> None:
    cfg = load_config("paper")
    assert cfg.data.target_shape == (192, 192, 144)
    assert cfg.model.channels == (64, 64, 128, 192, 256)
    assert cfg.diffusion.timesteps == 1000 and cfg.diffusion.loss == "l1"
    assert cfg.train.lr == 1e-5 and cfg.train.ema_decay == 0.995 and cfg.train.max_steps == 245_000
    assert [c.synthetic for c in cfg.segment.configurations] == [0, 1062, 2124, 598, 598, 598]


def test_unknown_key_names_key_and_known_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("smoke", ["train.max_stepz=3"])
    msg = str(err.value)
    assert "train.max_stepz" in msg and "max_steps" in msg and "lr" in msg


def test_unknown_section_names_known_sections() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*train"):
        load_config("smoke", ["trian.lr=3"])


def test_wrong_type_names_key() -> None:
    with pytest.raises(ConfigError, match=r"train\.max_steps"):
        load_config("smoke", ["train.max_steps=many"])


def test_out_of_range_names_key() -> None:
    with pytest.raises(ConfigError, match=r"augment\.flip_p"):
        load_config("smoke", ["augment.flip_p=1.5"])


def test_inconsistent_lr_schedule_rejected() -> None:
    with pytest.raises(ConfigError, match="lr_factors"):
        load_config("smoke", ["train.lr_factors=[1.0]"])


def test_groupnorm_divisibility_checked() -> None:
    with pytest.raises(ConfigError, match="norm_num_groups"):
        load_config("smoke", ["model.channels=[12, 16, 24]"])


def test_override_precedence_later_wins() -> None:
    cfg = load_config("smoke", ["train.max_steps=10", "train.max_steps=20"])
    assert cfg.train.max_steps == 20
    assert load_config("smoke").train.max_steps != 20


def test_override_parses_yaml_values() -> None:
    cfg = load_config(
        "smoke", ["data.target_shape=[16, 16, 16]", "train.bf16=true", "generate.n_synthetic=null"]
    )
    assert cfg.data.target_shape == (16, 16, 16)
    assert cfg.train.bf16 is True
    assert cfg.generate.n_synthetic is None


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("train.max_steps")


def test_missing_profile_lists_available() -> None:
    with pytest.raises(ConfigError, match="available profiles: .*smoke"):
        load_config("nonexistent")


def test_hash_stable_and_sensitive() -> None:
    a, b = load_config("smoke"), load_config("smoke")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(load_config("smoke", ["train.seed=1"]))
    # the output folder and where the work runs are not part of the science
    assert config_hash(a) == config_hash(load_config("smoke", run_dir="/tmp/elsewhere"))
    assert config_hash(a) == config_hash(load_config("smoke", ["runtime.workers=7", "runtime.device=auto"]))


def test_sections_are_frozen_after_loading() -> None:
    from pydantic import ValidationError

    cfg = load_config("smoke")
    with pytest.raises(ValidationError, match="frozen"):
        cfg.train.max_steps = 5  # type: ignore[misc]


def test_every_key_is_described_and_explained() -> None:
    from gliomagen.config import explain, undescribed_fields

    assert undescribed_fields() == []
    text = explain(load_config("smoke"))
    assert "data.target_shape = [32, 40, 32]   (paper: [192, 192, 144])" in text
    assert "the prepared grid in voxels" in text
    assert "   (paper: " not in explain(load_config("paper"))  # nothing differs from itself


def test_code_defaults_are_the_paper_and_smoke_states_only_differences() -> None:
    """One config truth: configs/paper.yaml adds nothing to the code defaults, and every value smoke.yaml
    sets differs from the paper's (an overlay, so a reader sees at a glance what smoke changes)."""
    import yaml

    from gliomagen.config import CONFIG_DIR, Config

    paper = load_config("paper").model_dump(mode="json")
    assert paper == Config(profile="paper").model_dump(mode="json")
    overlay = yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text())

    def same(node: dict, ref: dict, path: str) -> list[str]:
        out = []
        for key, value in node.items():
            if key == "profile":
                continue
            if isinstance(value, dict) and isinstance(ref.get(key), dict):
                out += same(value, ref[key], f"{path}{key}.")
            elif value == ref.get(key) or (isinstance(value, list) and list(value) == ref.get(key)):
                out.append(f"{path}{key}")
        return out

    assert same(overlay, paper, "") == []


def test_missing_real_data_says_how_to_get_it(tmp_path) -> None:
    from gliomagen.config import require_raw_data

    cfg = load_config("paper", [f"data.raw_dir={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match="syn60086071"):
        require_raw_data(cfg)


def test_yaml_file_profile(tmp_path) -> None:
    src = load_config("smoke")
    import yaml

    path = tmp_path / "mine.yaml"
    tree = src.model_dump(mode="json")
    tree["profile"] = "mine"
    path.write_text(yaml.safe_dump(tree))
    cfg = load_config(str(path))
    assert cfg.profile == "mine" and cfg.train.max_steps == src.train.max_steps


# ----------------------------------------------------------------------------------- issue 13: cross-field rules
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["diffusion.timesteps=100"], r"train\.val_timesteps \[250, 500, 750, 950\] must lie in 0\.\.99"),
        (
            ["diffusion.timesteps=50", "train.val_timesteps=[5]", "generate.steps=60"],
            r"generate_steps=60 exceeds",
        ),
        (["data.target_shape=[32, 42, 32]"], r"data\.target_shape \[32, 42, 32\] must be divisible by 4"),
        (
            ["segment.configurations=[{name: a, synthetic: 2, synthetic_pool: hq}]"],
            r"use the hq pool, which is ranked by a real-only configuration",
        ),
        (
            ["segment.hq_count=2"],
            r"take more hq volumes than segment\.hq_count=2",
        ),
    ],
)
def test_cross_section_rules_are_refused_at_load(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("smoke", overrides)


def test_relative_run_dir_is_taken_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config("smoke", run_dir="out").paths.root == tmp_path / "out"
    from gliomagen.paths import PROJECT_ROOT

    assert load_config("smoke").paths.root == PROJECT_ROOT / "runs" / "smoke"  # the profile's default
