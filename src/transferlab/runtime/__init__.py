"""Layer 3: who runs the model (device and precision, torch vs onnxruntime, the feature runner, DDP)."""
