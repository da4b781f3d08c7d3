"""Mode ``auto``: search backbones, input sizes, normalisation, flip augmentation, linear vs MLP
head, C and ensembles on cached features, within a time budget, and keep the best.

Every candidate is scored by stratified k-fold cross-validation on the *training* photos only
(:mod:`transferlab.probe` for the linear probe, :mod:`transferlab.training.cv` for the MLP; the
validation or test split is never looked at), with the same folds for all. The search runs in
stages, cheapest first, so that a short budget still ends with a sound choice:

1. single backbones (``AutoOptions.members``, each at its own size; lite2 also at 320 and
   384 px), each with raw (``std``) and per-member ``l2`` features: a linear probe, C from a grid;
   then GeM pooling (``gem``) instead of the average for the best few;
2. flip feature augmentation (mirrored rows in training, averaged features at prediction) for
   the best few;
3. ensembles, greedily (add to the best backbone the member that helps most, up to
   ``max_members``, while CV improves), of two kinds: ``avg``, the mean of the members' own
   probes' logits (scored from their out-of-fold logits: no new fit; one block-diagonal linear
   layer as a run), and ``linear``, one probe on the concatenated features;
4. an MLP head (``--mode head``'s) on the best single backbone (right after stage 1, so that a
   budget spent on extraction still leaves it) and on the best feature set.

Candidates rank by CV accuracy, ties (frequent with a few hundred photos) by the out-of-fold
log-loss after temperature scaling, then by speed.

Time is checked before each candidate, and the cost of a feature extraction is estimated before it
starts (images not yet cached / this machine's measured rate); what does not fit is skipped and
listed. Features come through the per-member cache, so a second search (or ``--resume``) extracts
nothing; finished leaderboard rows are kept in the cache too (keyed by the data, folds, seed and
grid), and ``resume`` reuses them. Same data + seed + finished rows = same choice.

The package is laid out as the work: :mod:`.clock` (the budget), :mod:`.bank` (member features,
extracted once), :mod:`.leaderboard` (typed :class:`Candidate` rows and ``leaderboard.csv``),
:mod:`.search` (the stages) and :mod:`.fit` (the chosen candidate as a run's head).
"""

from __future__ import annotations

from .bank import Bank
from .clock import Clock
from .fit import explain_choice, final_fit, train_auto
from .leaderboard import COLUMNS, Board, Candidate, rank_key, read_rows, search_key, to_csv
from .search import Search

__all__ = ["COLUMNS", "Bank", "Board", "Candidate", "Clock", "Search", "explain_choice", "final_fit", "rank_key",
           "read_rows", "search_key", "to_csv", "train_auto"]
