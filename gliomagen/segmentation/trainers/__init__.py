"""nnU-Net trainers of this project, found by nnU-Net through ``nnUNet_extTrainer=<this folder>``.

nnU-Net imports the modules of this folder by file (not as ``gliomagen`` submodules), so they import
only nnunetv2 and the standard library.
"""
