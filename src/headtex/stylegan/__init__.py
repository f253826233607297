"""The stylegan stage: MobileStyleGAN fetched, its mean style and a yaw direction found in its style space."""
