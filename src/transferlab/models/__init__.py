"""Layer 2: networks (backbone registry, classifier wrapper, bundled and online families, heads)."""
