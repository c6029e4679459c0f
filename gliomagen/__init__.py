"""GliomaGen: mask-conditioned 3D diffusion for BraTS 2024 post-treatment glioma MRI, as a reproducible
notebook-first artifact. Each pipeline stage has one module or subpackage; notebooks call them."""

__version__ = "0.1.0"
