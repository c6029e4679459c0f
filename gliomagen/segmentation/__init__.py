"""Downstream segmentation: nnU-Net v2 on the paper's six training-data mixes, and its evaluation.

Modules:
    outputs: the files the stage writes (``SegmentationOutputs``) and their readers.
    selection: which real and synthetic cases each configuration trains on (patient-level, leak-guarded).
    export: nnU-Net raw datasets per configuration, label lookup tables.
    nnunet: a configuration's nnU-Net job (environment, folders) and running it in its own process.
    worker: that process: plan, preprocess, train and predict with nnunetv2's own APIs.
    checkpoints: nnU-Net checkpoints that cannot run code (sha256 records, ``weights_only`` loading).
    trainers: the nnU-Net trainer classes (found by nnU-Net through ``nnUNet_extTrainer``).
    hq: the measured high-quality synthetic subset.
    overlap: Dice and medpy's surface distances of two binary masks.
    metrics: the paper's metric definitions; corrected: the corrected ones (mm, BraTS lesion-wise).
    stats: paired tests and bootstrap confidence intervals against real-only.
    evaluation: every configuration's metrics on the real validation scans.
    pipeline: ``segment(cfg)`` (the stage); cli: ``gliomagen segment``.
    plots: figures and tables for notebook 06.
"""
