"""A job that finds every feature in the cache never builds the network (issue 16): it needs
the backbone's name, preprocessing and weights digest, all known without importing timm or
torchvision, which cost seconds of start-up."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, sys
from transferlab.training.api import train
run = train(sys.argv[1], out=sys.argv[2], progress=False)
print(json.dumps({"timm": "timm" in sys.modules, "torchvision": "torchvision" in sys.modules,
                  "built": run.backbone.built, "val_accuracy": run.metrics["val_accuracy"]}))
"""


def test_cached_retrain_builds_no_network_and_imports_no_timm(tmp_path, small_pets, small_pets_run):
    """``small_pets_run`` cached the features; a second training in a fresh process reads them,
    trains and writes a complete run without building the backbone's network."""
    r = subprocess.run([sys.executable, "-c", CODE, str(small_pets), str(tmp_path / "again")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == {"timm": False, "torchvision": False, "built": False,
                    "val_accuracy": json.loads((small_pets_run / "metrics.json").read_text())["val_accuracy"]}
    cfg = json.loads((tmp_path / "again" / "config.json").read_text())
    assert cfg["environment"]["timm"] and cfg["backbone"]["weights_digest"] == json.loads(
        (small_pets_run / "config.json").read_text())["backbone"]["weights_digest"]
