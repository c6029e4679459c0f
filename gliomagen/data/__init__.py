"""The data stage: the BraTS-layout phantom, validated ingestion, preparation, QC and the patient split.

Modules:
    phantom: writes the built-in phantom dataset (MNI152 anatomy + synthetic post-treatment lesions).
    validate: discovers BraTS case folders and checks every file of a case.
    head: the head label, computed once per scan by a documented rule.
    geometry: isotropic rescale + centre pad/crop with the correct affine.
    qc: automatic quality control of a prepared case.
    split: patient-level (or paper-compatible) train/validation split.
    prepare: the stage itself (``gliomagen prepare``) and :func:`usable_cases`.
    plots: figures of notebook 01.
"""
