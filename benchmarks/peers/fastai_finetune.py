"""fastai's course recipe on the bundled weights: ``vision_learner`` with the timm architecture
(``pretrained=False``, then the bundled weights loaded into its body), presizing (``Resize(460)``
per item, ``aug_transforms(size, min_scale=0.75)`` per batch, as the course's pet-breeds chapter),
``fine_tune(epochs)``: one frozen epoch, then ``epochs`` unfrozen, at the default learning rate.

fastai adds the ImageNet normalisation itself only for weights it downloaded; here we add the
weights' own (timm's pretrained config: mean = std = 0.5) the same way it would. A fastai
learner needs a validation set: one test photo per class stands in (so it costs little and
selects nothing: ``fine_tune`` has no early stopping); the whole test CSV is scored once, after
training, with ``test_dl`` + ``get_preds``. Prints one JSON object.

    python -m benchmarks.peers.fastai_finetune --train train.csv --test test.csv [--epochs 3] [--size N]
"""

from __future__ import annotations

import contextlib
import sys
import time

from .common import args, bundled_state, report, rows, timm_arch


def frame(paths, labels, valid):
    import pandas as pd

    return pd.DataFrame({"path": paths, "label": labels, "is_valid": valid})


def learner(a, train_df, size: int, cfg: dict):
    from fastai.vision.all import ImageDataLoaders, Normalize, Resize, accuracy, aug_transforms, vision_learner

    dls = ImageDataLoaders.from_df(train_df, path="/", fn_col="path", label_col="label", valid_col="is_valid",
                                   item_tfms=Resize(460), batch_tfms=aug_transforms(size=size, min_scale=0.75),
                                   bs=a.bs)
    learn = vision_learner(dls, timm_arch(a.backbone), pretrained=False, metrics=accuracy)
    learn.model[0].model.load_state_dict(bundled_state(a.backbone))
    dls.add_tfms([Normalize.from_stats(cfg["mean"], cfg["std"])], "after_batch")  # what fastai's _add_norm does
    return learn


def main() -> None:
    a = args(__doc__.splitlines()[0], epochs={"type": int, "default": 3}, bs={"type": int, "default": 64})
    import timm

    cfg = timm.create_model(timm_arch(a.backbone), pretrained=False).pretrained_cfg
    size = a.size or cfg["input_size"][-1]
    tr_p, tr_y = rows(a.train)
    te_p, te_y = rows(a.test)
    first = {}
    for p, y in zip(te_p, te_y):
        first.setdefault(y, p)  # one test photo per class: fastai's required validation set
    df = frame(tr_p + list(first.values()), tr_y + list(first), [False] * len(tr_p) + [True] * len(first))
    with contextlib.redirect_stdout(sys.stderr):  # fastai prints its tables; stdout carries our JSON
        learn = learner(a, df, size, cfg)
        with learn.no_bar():
            learn.fine_tune(a.epochs)
        trained = time.perf_counter()
        with learn.no_bar():
            preds, targs = learn.get_preds(dl=learn.dls.test_dl(frame(te_p, te_y, [False] * len(te_p)),
                                                                 with_labels=True))
    acc = float((preds.argmax(1) == targs).float().mean())
    report(acc, time.perf_counter() - trained,
           {"timm_arch": timm_arch(a.backbone), "size": size, "epochs": a.epochs, "freeze_epochs": 1,
            "base_lr": 2e-3, "bs": a.bs, "valid_images": len(first), "train_images": len(tr_p),
            "test_images": len(te_p), "mean": list(cfg["mean"]), "std": list(cfg["std"])})


if __name__ == "__main__":
    main()
