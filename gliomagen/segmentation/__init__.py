"""Downstream segmentation: nnU-Net v2 on the paper's six training-data mixes, and its evaluation.

Modules:
    export: nnU-Net raw datasets per configuration (patient-level, leak-guarded).
    nnunet: plan, preprocess, train and predict with nnunetv2's own APIs, one configuration per process.
    hq: the measured high-quality synthetic subset.
    metrics: the paper's metric definitions and the corrected ones (mm distances, BraTS lesion-wise).
    stats: paired tests and bootstrap confidence intervals against real-only.
    pipeline: ``segment(cfg)`` and the ``gliomagen segment`` entry point.
    plots: figures for notebook 06.
"""
