"""Model files (weights + metadata + sha256) and the user model store."""
