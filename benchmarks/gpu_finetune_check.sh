#!/usr/bin/env bash
# GPU check for issue 3 (< 3 min on one H100): a 2-epoch fine-tune of the Oxford subset on CUDA
# with AMP (bf16 autocast), channels_last, then the official test split; prints accuracy + wall time.
# Usage: benchmarks/gpu_finetune_check.sh [OXFORD_ROOT]   (needs the repo's .venv; default data:
# ../shared/data/oxford-pets-subset, or shared/data/oxford-pets-subset inside the repo)
# SWEEP=1 adds two longer fine-tunes (lite0 and lite2, 10 epochs, RandAugment) that the 2-core CPU
# could not afford: about 2 more minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/oxford-pets-subset}
[ -d "$DATA" ] || DATA=shared/data/oxford-pets-subset
[ -d "$DATA" ] || { echo "Oxford subset not found; pass its path" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d)}
export TRANSFERLAB_CACHE=$OUT/cache
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; \
print('device', torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported(), 'torch', torch.__version__)"
s=$SECONDS
.venv/bin/python -m transferlab train "$DATA" --mode finetune --val-fraction 0 --epochs 2 --batch-size 64 \
    --out "$OUT/oxford-ft" --quiet --json
train_s=$((SECONDS - s)); s=$SECONDS
.venv/bin/python -m transferlab evaluate "$OUT/oxford-ft" "$DATA" --quiet --json > "$OUT/test.json"
eval_s=$((SECONDS - s)); s=$SECONDS
.venv/bin/python -m transferlab evaluate "$OUT/oxford-ft" "$DATA" --tta flip --quiet --json > "$OUT/test-tta.json"
tta_s=$((SECONDS - s))
.venv/bin/python - "$OUT" "$train_s" "$eval_s" "$tta_s" <<'PY'
import json, sys
out, tr, ev, tta = sys.argv[1], *sys.argv[2:]
cfg = json.load(open(f"{out}/oxford-ft/config.json"))["train"]
m, t = json.load(open(f"{out}/test.json")), json.load(open(f"{out}/test-tta.json"))
print(f"device {cfg['device']}  autocast {cfg['autocast']}  seconds/epoch {cfg['seconds_per_epoch']}")
print(f"test accuracy {m['accuracy']:.4f} on {m['n']} images  (flip TTA {t['accuracy']:.4f})")
print(f"wall: train {tr} s (features + head + 2 epochs), evaluate {ev} s, evaluate --tta flip {tta} s")
PY

if [ "${SWEEP:-0}" = 1 ]; then
  for bb in efficientnet_lite0 efficientnet_lite2; do
    s=$SECONDS
    .venv/bin/python -m transferlab train "$DATA" --backbone $bb --mode finetune --val-fraction 0 --epochs 10 \
        --aug randaug --batch-size 64 --out "$OUT/oxford-$bb-10" --quiet --json > /dev/null
    .venv/bin/python -m transferlab evaluate "$OUT/oxford-$bb-10" "$DATA" --quiet --json > "$OUT/$bb-10.json"
    .venv/bin/python -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], 'finetune 10 epochs randaug: test accuracy', round(m['accuracy'], 4), 'wall', sys.argv[3], 's')" \
        "$OUT/$bb-10.json" $bb $((SECONDS - s))
  done
fi
