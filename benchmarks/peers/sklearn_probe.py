"""The naive probe: timm features of the bundled weights, the lesson's loop, scikit-learn's
LogisticRegression. What a scikit-learn user writes without transferlab: timm's own transforms
for the model (``resolve_data_config`` + ``create_transform``: resize, centre crop, normalise), a
PIL loader, ``DataLoader(num_workers=0)``, eager fp32, default C (``max_iter`` raised so lbfgs
converges). Prints one JSON object.

    python -m benchmarks.peers.sklearn_probe --train train.csv --test test.csv [--backbone B] [--size N]
"""

from __future__ import annotations

import time

from .common import T0, args, bundled_state, report, rows, timm_arch


def features(net, tf, paths: list[str]):
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return tf(Image.open(paths[i]).convert("RGB"))

    out = []
    with torch.no_grad():
        for x in DataLoader(Files(), batch_size=32, num_workers=0):
            out.append(net(x).numpy())
    return np.concatenate(out)


def main() -> None:
    a = args(__doc__.splitlines()[0])
    import timm
    from sklearn.linear_model import LogisticRegression

    net = timm.create_model(timm_arch(a.backbone), pretrained=False, num_classes=0)
    net.load_state_dict(bundled_state(a.backbone))
    net.eval()
    cfg = timm.data.resolve_data_config({}, model=net)
    if a.size:
        cfg["input_size"] = (3, a.size, a.size)
    tf = timm.data.create_transform(**cfg)
    train_paths, train_labels = rows(a.train)
    clf = LogisticRegression(max_iter=1000).fit(features(net, tf, train_paths), train_labels)
    trained = time.perf_counter()
    test_paths, test_labels = rows(a.test)
    pred = clf.predict(features(net, tf, test_paths))
    acc = sum(p == y for p, y in zip(pred, test_labels)) / len(test_labels)
    report(float(acc), time.perf_counter() - trained,
           {"timm_arch": timm_arch(a.backbone), "data_config": {k: str(v) for k, v in cfg.items()},
            "train_images": len(train_paths), "test_images": len(test_paths),
            "train_seconds_in_script": round(trained - T0, 2)})


if __name__ == "__main__":
    main()
