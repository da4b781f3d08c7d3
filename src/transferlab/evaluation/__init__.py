"""Layer 6: predictions, metrics and evaluation of any classifier with ``predict_proba``."""
