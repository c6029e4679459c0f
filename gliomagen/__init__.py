"""GliomaGen: mask-conditioned 3D diffusion for BraTS 2024 post-treatment glioma MRI, as a reproducible
notebook-first artifact. Each pipeline stage has one module or subpackage; notebooks call them.

``gliomagen.load_denoiser(path, profile="paper", overrides=())`` returns the network of any project
checkpoint (trained, or imported from the original's released weights) in eval mode; it is imported on
first use, so ``import gliomagen`` stays light (no torch/MONAI).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_denoiser"]


def __getattr__(name: str) -> Any:
    # lazy: the checkpoint loader pulls in torch and MONAI, which the CLI's argument parsing does not need
    if name == "load_denoiser":
        from gliomagen.diffusion.checkpoint import load_denoiser

        return load_denoiser
    raise AttributeError(f"module 'gliomagen' has no attribute {name!r}")
