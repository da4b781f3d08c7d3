"""Layer 9: adversarial examples in [0, 1] pixel space, and robustness curves."""
