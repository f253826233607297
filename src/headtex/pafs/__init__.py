"""PAF stage: face detection, 68 landmarks, template fitting and partial UV textures (thesis 3.2)."""
