"""headtex: complete UV head textures from single photographs (a DVC pipeline; docs/ARCHITECTURE.md)."""
