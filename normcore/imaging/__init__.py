"""Imaging pipeline: NIfTI IO, registration to MNI, latent diffusion pseudo-healthy restoration, anomaly maps."""
