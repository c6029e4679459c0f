"""Mask-conditioned 3D diffusion (issue #4): network, samplers, training, checkpoints."""
