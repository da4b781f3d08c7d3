"""Layer 5: figures and text formatting, pure functions over results."""
