"""The chosen candidate fitted on every training photo, turned into a run's head, and the reason
for the choice in words; :func:`train_auto` ties search and fit together for ``--mode auto``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..._io import atomic_write
from ...errors import DataError
from ...models.registry import DEFAULT_BACKBONE, create_backbone
from ...models.views import ViewSpec
from ...options import OptionError
from ...probe import cv_linear, fit_linear_probe
from ...runtime.onnx import lean_sessions
from ..cv import cv_head, fit_mlp
from ..job import Fitted, Job
from ..options import HeadOptions
from .leaderboard import Candidate, rank_key, to_csv
from .search import Search


def explain_choice(s: Search, best: Candidate) -> str:
    """Why the run keeps ``best``, in one line a person can check against the leaderboard."""
    single = max(s.board.scored(single=True), key=rank_key, default=None)
    scored, skipped = s.board.scored(), s.board.skipped()
    text = (f"{best.cid}: the highest {best.folds}-fold cross-validated accuracy on the "
            f"{len(s.job.train)} training photos ({best.cv_accuracy:.2%} ± {best.cv_sd:.2%})")
    if single is not None and single.cid != best.cid:
        if single.cv_accuracy == best.cv_accuracy:
            text += (f", tied with the best single backbone ({single.cid}) and kept for its lower "
                     f"out-of-fold log-loss ({best.cv_nll:.3f} vs {single.cv_nll:.3f})")
        else:
            text += (f", {100 * (best.cv_accuracy - single.cv_accuracy):+.1f} points over the best single "
                     f"backbone ({single.cid}, {single.cv_accuracy:.2%})")
    return (text + f"; {len(scored)} candidates scored, {len(skipped)} skipped for the budget "
            f"({s.clock.elapsed():.0f} s of {s.clock.budget:.0f} s); it predicts ~{best.predict_img_s:.0f} "
            f"photos/s here (end to end, every member and mirror)")


def _with_mirrors(x: np.ndarray, mirror: np.ndarray | None, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training rows of a probe: every photo, and its mirror too with flip augmentation."""
    return (x, y) if mirror is None else (np.concatenate([x, mirror]), np.concatenate([y, y]))


def _fit_average(s: Search, spec: ViewSpec, ok: np.ndarray, y: np.ndarray) -> tuple[torch.nn.Linear, dict]:
    """Each member's probe (its own C) on its own block, as one block-diagonal linear layer whose
    logits are the members' mean."""
    k, heads = len(s.job.train.classes), []
    for member in s.member_rows(spec):
        x, mirror, ok_m = s.bank.matrix(member.view)
        x, mirror = x[ok[ok_m]], None if mirror is None else mirror[ok[ok_m]]
        heads.append(fit_linear_probe(*_with_mirrors(x, mirror, y), None, None, k, s.job.seed, c=member.c)[0])
    lin = torch.nn.Linear(sum(h.in_features for h in heads), k)
    with torch.no_grad():
        lin.weight.copy_(torch.cat([h.weight for h in heads], 1) / len(heads))
        lin.bias.copy_(torch.stack([h.bias for h in heads]).mean(0))
    return lin, {"type": "linear", "in": lin.in_features, "out": k}


def _fit_best(s: Search, best: Candidate, x: np.ndarray, mirror: np.ndarray | None, y: np.ndarray,
              ok: np.ndarray):
    """(head, head spec) of the chosen candidate, fitted on every training photo."""
    k = len(s.job.train.classes)
    if best.model == "avg":
        return _fit_average(s, best.view, ok, y)
    if best.model == "linear":
        head, _, _ = fit_linear_probe(*_with_mirrors(x, mirror, y), None, None, k, s.job.seed, c=best.c)
        return head, {"type": "linear", "in": x.shape[1], "out": k}
    return fit_mlp(x, y, k, HeadOptions(), s.job.seed, mirror)


def _probs(head, x: np.ndarray, mirror: np.ndarray | None) -> np.ndarray:
    xe = x if mirror is None else (x + mirror) / 2
    with torch.no_grad():
        return head.eval()(torch.from_numpy(np.ascontiguousarray(xe, np.float32))).softmax(-1).numpy()


def _oof(s: Search, best: Candidate, y: np.ndarray) -> np.ndarray:
    """Out-of-fold logits of the chosen candidate (recomputed when its row was reused)."""
    if best.cid in s.board.oof:
        return s.board.oof[best.cid]
    if best.model == "avg":
        return s.average_oof(best.view, s.member_rows(best.view))[0]
    x, mirror, ok = s.bank.matrix(best.view)
    splits = s.splits(ok, y)
    if best.model == "linear":
        return cv_linear(x, y, (best.c,), splits, s.job.seed, mirror).oof_logits
    return cv_head(x, y, splits, HeadOptions(), s.job.seed, mirror).oof_logits


def _info(s: Search, best: Candidate) -> dict:
    """What the run's config records of the search: the choice, why, and the whole leaderboard."""
    return {**({"C": best.c} if best.model == "linear" else {}), "selection": "cv",
            "feature_aug": "flip" if best.flip else "none", "head_model": best.model,
            "auto": {"chosen": best.cid, "why": explain_choice(s, best), "budget_s": s.clock.budget,
                     "elapsed_s": round(s.clock.elapsed(), 1), "folds": s.o.folds, "seed": s.job.seed,
                     "search_key": s.key, "leaderboard": s.board.ranked()}}


def final_fit(s: Search, best: Candidate | Mapping) -> Fitted:
    """The chosen candidate on all training photos, scored on the validation split (if any).
    ``best`` may also be a leaderboard row as the run's config holds it (the benchmarks refit
    rows that way)."""
    best = best if isinstance(best, Candidate) else Candidate.from_row(best)
    spec = best.view
    s.bank.ensure_view(spec)
    x, mirror, ok = s.bank.matrix(spec)
    y = s.job.train.labels[ok]
    head, head_spec = _fit_best(s, best, x, mirror, y, ok)
    val_probs = val_ok = None
    if len(s.job.val):
        xv, mv, val_ok = s.bank.matrix(spec, split=1)
        val_probs = _probs(head, xv, mv)
    return Fitted(
        head=head, head_spec=head_spec, val_probs=val_probs, val_ok=val_ok,
        train_accuracy=float((_probs(head, x, mirror).argmax(1) == y).mean()), skipped=s.bank.skipped(spec),
        backbone=create_backbone(spec.name()),
        calibration=None if val_probs is not None else (_oof(s, best, y), y, "cv"),
        info=_info(s, best),
    )


def train_auto(job: Job) -> Fitted:
    """``--mode auto``: the budgeted search, then the best candidate fitted on every training
    photo; writes ``leaderboard.csv`` into the run."""
    if len(np.unique(job.train.labels)) < 2:
        raise DataError("the training split has photos of fewer than 2 classes")
    if job.run.backbone != DEFAULT_BACKBONE or job.run.input_size or job.run.weights:
        raise OptionError("backbone", "and {input_size} do not apply to {mode} auto, which searches its "
                                      "{members} (e.g. efficientnet_lite2@384,mobilenet_v2)")
    s = Search(job, job.options)
    with lean_sessions():  # a dozen networks in one process: no onnxruntime arena kept per network
        best = s.run()
        if best is None:
            raise DataError(f"no candidate fitted in the budget of {s.clock.budget:.0f} s (the cheapest needs "
                            "its features extracted first); give a larger --budget")
        fitted = final_fit(s, best)
    job.out.mkdir(parents=True, exist_ok=True)
    text = to_csv(fitted.info["auto"]["leaderboard"])
    atomic_write(job.out / "leaderboard.csv", lambda p: p.write_text(text))
    return fitted
