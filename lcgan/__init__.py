"""lcgan: CycleGAN-style unpaired translation in VAE latent space."""
