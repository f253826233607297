"""Blend stage: one complete UV texture per identity from its partial textures, train/test split."""
