"""Faces stage: synthetic multi-view identities with ground truth (renders of the template), or real multi-view photos."""
