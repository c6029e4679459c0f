"""The building blocks of the config: the section base class, the error type, the paper's label map and data
mixes, and the path rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from gliomagen.paths import PROJECT_ROOT

CONFIG_DIR = PROJECT_ROOT / "configs"
MODALITIES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")


class ConfigError(ValueError):
    """A profile or override is invalid; the message names the key and how to fix it."""


#: the paper's label map: background, the derived head label, the four BraTS 2024 post-treatment labels
PAPER_LABELS: tuple[dict[str, Any], ...] = (
    {"name": "background", "source": 0, "value": 0, "tumour": False},
    {"name": "head", "source": None, "value": 1, "tumour": False},
    {"name": "NETC", "source": 1, "value": 2},
    {"name": "SNFH", "source": 2, "value": 3},
    {"name": "ET", "source": 3, "value": 4},
    {"name": "RC", "source": 4, "value": 5},
)
#: the paper's six nnU-Net training-data mixes
PAPER_CONFIGURATIONS: tuple[dict[str, Any], ...] = (
    {"name": "real_only", "real_fraction": 1.0, "synthetic": 0},
    {"name": "real_1062syn", "real_fraction": 1.0, "synthetic": 1062, "synthetic_pool": "all"},
    {"name": "real_2124syn", "real_fraction": 1.0, "synthetic": 2124, "synthetic_pool": "all"},
    {"name": "real_598hq", "real_fraction": 1.0, "synthetic": 598, "synthetic_pool": "hq"},
    {"name": "hq598_only", "real_fraction": 0.0, "synthetic": 598, "synthetic_pool": "hq"},
    {"name": "halfreal_598hq", "real_fraction": 0.5, "synthetic": 598, "synthetic_pool": "hq"},
)


class _Section(BaseModel):
    """A config section: unknown keys are errors, and nothing changes after loading (the hash describes
    what ran). Each field is described in the class docstring's ``Args:`` (``gliomagen config --explain``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def resolve_path(path: str | Path) -> Path:
    """Absolute path; relative paths are taken from the project root (where ``configs/`` lives)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()
