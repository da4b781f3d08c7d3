"""transferlab's benchmarks: one harness (``python -m benchmarks``), one small module per area,
results as JSON per CPU kind in ``benchmarks/results/``, and BENCHMARKS.md generated from them.
Run from the repository root; not part of the wheel. See ``benchmarks/template.md`` for methods."""
