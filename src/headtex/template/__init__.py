"""Template stage: the head mesh, UV layout, albedo and shape basis built from the menpo3d scan."""
