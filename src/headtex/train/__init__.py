"""`train` stage: the gated-convolution inpainting GAN (thesis 3.4, 4.1, App. B) trained with dvclive logging."""
