"""Layer 1: files -> pixels (image decoding, datasets, preprocessing geometry, batch loader, fetch)."""
