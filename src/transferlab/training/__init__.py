"""Layer 8: training (options, linear probe, MLP head, fine-tuning loop + callbacks, api)."""
