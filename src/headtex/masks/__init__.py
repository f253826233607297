"""Masks stage: the occlusion-mask bank (real visibility masks of held-out identities) and free-form strokes."""
