"""reconstruct: one photograph -> fully textured 3D head (thesis 3.5): photo reading, core, command."""
