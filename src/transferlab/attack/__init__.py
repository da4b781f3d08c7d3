"""Layer 9: adversarial examples in [0, 1] pixel space, and robustness curves.

``budget`` (epsilons, :class:`AttackSpec`, 8-bit quantisation, measures) -> ``methods`` (the
algorithms) -> ``core`` (:func:`run_attack`: attack, round, refine, score) -> ``single`` (one
photo: :func:`attack_image`, :func:`transfer`) and ``robustness`` (accuracy under attack).
Import from the submodules; this package imports nothing, so importing it stays cheap.
"""
