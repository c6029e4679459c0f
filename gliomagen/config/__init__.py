"""One typed, validated configuration per run.

A run is described by a *profile* (``configs/<profile>.yaml``) plus overrides (``--set a.b=value`` on the
CLI, ``overrides=[...]`` as a papermill parameter). Loading validates every key and value and produces a
:class:`Config`; :func:`config_hash` gives a short stable hash that is written next to every output so a
result can always be traced to the exact configuration that made it.

Example:
    >>> cfg = load_config("smoke", ["train.max_steps=50"])
    >>> cfg.train.max_steps
    50
"""

from gliomagen.config.base import (
    CONFIG_DIR,
    MODALITIES,
    PAPER_CONFIGURATIONS,
    PAPER_LABELS,
    ConfigError,
    resolve_path,
)
from gliomagen.config.data import (
    DataConfig,
    HeadConfig,
    IntensityConfig,
    LabelSpec,
    PhantomConfig,
    QCConfig,
    SplitConfig,
)
from gliomagen.config.diffusion import DiffusionConfig, ModelConfig, TrainConfig
from gliomagen.config.explain import explain, field_descriptions, undescribed_fields
from gliomagen.config.loading import available_profiles, load_config, parse_override, require_raw_data
from gliomagen.config.root import Config, RuntimeConfig, config_hash
from gliomagen.config.stages import (
    AugmentConfig,
    FidelityConfig,
    FiguresConfig,
    GenerateConfig,
    ReaderStudyConfig,
    SegConfiguration,
    SegmentConfig,
    SweepConfig,
)

__all__ = [
    "CONFIG_DIR",
    "MODALITIES",
    "PAPER_CONFIGURATIONS",
    "PAPER_LABELS",
    "AugmentConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DiffusionConfig",
    "FidelityConfig",
    "FiguresConfig",
    "GenerateConfig",
    "HeadConfig",
    "IntensityConfig",
    "LabelSpec",
    "ModelConfig",
    "PhantomConfig",
    "QCConfig",
    "ReaderStudyConfig",
    "RuntimeConfig",
    "SegConfiguration",
    "SegmentConfig",
    "SplitConfig",
    "SweepConfig",
    "TrainConfig",
    "available_profiles",
    "config_hash",
    "explain",
    "field_descriptions",
    "load_config",
    "parse_override",
    "require_raw_data",
    "resolve_path",
    "undescribed_fields",
]
