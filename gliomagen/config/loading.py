"""Loading a profile with overrides into a validated :class:`~gliomagen.config.root.Config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gliomagen.config.base import CONFIG_DIR, ConfigError
from gliomagen.config.root import Config


def available_profiles() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-parsed value."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.max_steps=100)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    return key.split("."), value


def _apply_override(tree: dict[str, Any], keys: list[str], value: Any, model: type[BaseModel]) -> None:
    node: dict[str, Any] = tree
    current: type[BaseModel] | None = model
    for depth, key in enumerate(keys):
        if current is not None and key not in current.model_fields:
            where = ".".join(keys[:depth]) or "the top level"
            known = ", ".join(sorted(current.model_fields))
            raise ConfigError(f"unknown key {'.'.join(keys[: depth + 1])!r} at {where}; known keys: {known}")
        if depth == len(keys) - 1:
            node[key] = value
            return
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
        current = _submodel(current, key)


def _submodel(model: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    if model is None:
        return None
    annotation = model.model_fields[key].annotation
    candidates = getattr(annotation, "__args__", (annotation,))
    for cand in candidates:
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _model_at(Config, list(err["loc"][:-1]))
            known = ", ".join(sorted(parent.model_fields)) if parent else "?"
            lines.append(f"  - unknown key {key!r}; known keys here: {known}")
        else:
            got = err.get("input")
            got_s = f" (got {got!r})" if not isinstance(got, dict) else ""
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  - {key}: {msg}{got_s}" if key else f"  - {msg}")
    return "\n".join(lines)


def _model_at(model: type[BaseModel] | None, loc: list[Any]) -> type[BaseModel] | None:
    for key in loc:
        if model is None:
            return None
        if isinstance(key, int):
            continue
        if key not in model.model_fields:
            return None
        annotation = model.model_fields[key].annotation
        inner = getattr(annotation, "__args__", (annotation,))
        found = None
        for cand in inner:
            args = getattr(cand, "__args__", (cand,))
            for a in args:
                if isinstance(a, type) and issubclass(a, BaseModel):
                    found = a
        model = found
    return model


def load_config(
    profile: str = "smoke",
    overrides: list[str] | None = None,
    run_dir: str | Path | None = None,
) -> Config:
    """Load ``configs/<profile>.yaml`` (or a YAML file path), apply overrides and validate.

    Args:
        profile: profile name in ``configs/`` or a path to a YAML file.
        overrides: ``section.key=value`` strings, applied in order (later wins).
        run_dir: where the run's outputs go (default ``runs/<profile>`` in the project); a relative path is
            taken from the current directory.

    Raises:
        ConfigError: with a message naming the offending key.
    """
    path = Path(profile)
    if path.suffix not in {".yaml", ".yml"}:
        path = CONFIG_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"profile {profile!r} not found at {path}; available profiles: {', '.join(available_profiles())}"
        )
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    tree.setdefault("profile", path.stem)
    for item in overrides or []:
        keys, value = parse_override(item)
        _apply_override(tree, keys, value, Config)
    if run_dir is not None:
        # a run folder given by the caller (--run-dir) is relative to the current directory, like any
        # other path on a command line; only the profile's default (runs/<profile>) lives in the checkout
        tree["run_dir"] = str(Path(run_dir).expanduser().resolve())
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(path))) from None


def require_raw_data(cfg: Config) -> Path:
    """The raw BraTS folder, or an error that says how to get the data."""
    raw = cfg.raw_dir
    if raw.is_dir() and any(raw.iterdir()):
        return raw
    if cfg.data.phantom is not None:
        return raw  # the caller generates the phantom there
    raise ConfigError(
        f"raw data folder {raw} is missing or empty (data.raw_dir in profile {cfg.profile!r}).\n"
        "Get BraTS 2024 Adult Post-Treatment Glioma training data from Synapse (id syn60086071, needs a "
        "free Synapse account and accepting the data terms), unpack it so that the folder holds "
        "BraTS-GLI-xxxxx-xxx/ case folders, and point data.raw_dir at it, e.g.\n"
        "  gliomagen prepare --profile paper --set data.raw_dir=/data/BraTS2024-GLI-post\n"
        "or run the smoke profile, which builds its own phantom dataset."
    )
