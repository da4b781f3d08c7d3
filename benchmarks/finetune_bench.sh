#!/usr/bin/env bash
# Issue 3 benchmarks: fine-tuning vs linear on the Oxford subset, PetImages modes, kill -9 + resume,
# and a 2-process gloo DDP run. Long (an hour or more on 2 shared cores); logs each stage's wall time.
# Usage: benchmarks/finetune_bench.sh [OUTDIR] [STAGES...]   (stages: oxford pets resume ddp; default all)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/ft-bench}; shift || true
STAGES=${*:-oxford pets resume ddp}
TL=".venv/bin/python -m transferlab"
DATA=../shared/data
mkdir -p "$OUT"
export TRANSFERLAB_CACHE=${TRANSFERLAB_CACHE:-$OUT/cache}
# One torch thread per process: on a shared, oversubscribed CPU two OpenMP threads per process spin
# against each other (measured here: fwd+bwd of 8 images 33 s with 2 threads vs 7 s with 1).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
t() { local s=$SECONDS; echo "+ $*" >&2; "$@"; echo "wall $((SECONDS - s)) s: $*" >&2; }

for st in $STAGES; do case $st in
oxford)  # finetune vs linear (lead: linear lite0 trainval, val_fraction 0 -> 88.9 % on the 760 test images)
  t $TL train $DATA/oxford-pets-subset --mode finetune --val-fraction 0 --epochs 5 --batch-size 32 \
      --out "$OUT/oxford-ft-lite0" --quiet --json
  t $TL evaluate "$OUT/oxford-ft-lite0" $DATA/oxford-pets-subset --quiet --json > "$OUT/oxford-ft-lite0.test.json"
  t $TL evaluate "$OUT/oxford-ft-lite0" $DATA/oxford-pets-subset --tta flip --quiet --json \
      > "$OUT/oxford-ft-lite0.test-tta.json"
  t $TL train $DATA/oxford-pets-subset --mode head --val-fraction 0 --out "$OUT/oxford-head-lite0" --quiet --json
  t $TL evaluate "$OUT/oxford-head-lite0" $DATA/oxford-pets-subset --quiet --json > "$OUT/oxford-head-lite0.test.json"
  for r in ft-lite0.test ft-lite0.test-tta head-lite0.test; do
    .venv/bin/python -c "import json;m=json.load(open('$OUT/oxford-$r.json'));print('oxford $r acc',m['accuracy'],m['n'])"
  done
  ;;
pets)  # PetImages, seeded 80/20: head mode on cached lite0 features, then lite2 linear and head
  for bm in "efficientnet_lite0 head" "efficientnet_lite2 linear" "efficientnet_lite2 head"; do
    set -- $bm
    t $TL train $DATA/petimages --backbone "$1" --mode "$2" --out "$OUT/pets-$1-$2" --quiet --json
  done
  ;;
resume)  # kill -9 during epoch 2, --resume, compare with an uninterrupted run (same seed)
  .venv/bin/python - "$OUT/pets200.csv" <<'PY'
import sys
from pathlib import Path
root = Path("../shared/data/petimages").resolve()  # CSV paths are relative to the CSV
rows = [f"{p},{c}" for c in ("Cat", "Dog") for p in sorted(root.glob(f"{c}/*.jpg"),
        key=lambda p: int(p.stem))[:100]]
Path(sys.argv[1]).write_text("path,label\n" + "\n".join(rows) + "\n")
PY
  ARGS="--mode finetune --epochs 3 --batch-size 16 --quiet --json"
  t $TL train "$OUT/pets200.csv" $ARGS --out "$OUT/resume-full"
  rm -rf "$OUT/resume-killed"
  $TL train "$OUT/pets200.csv" $ARGS --out "$OUT/resume-killed" & PID=$!
  until grep -qs '"epoch": 1' "$OUT/resume-killed/checkpoint/state.json"; do sleep 2; done
  sleep 15; kill -9 $PID; wait $PID || echo "killed during epoch 2 (exit $?)" >&2
  t $TL train "$OUT/pets200.csv" $ARGS --resume "$OUT/resume-killed"
  .venv/bin/python - "$OUT" <<'PY'
import json, sys
o = sys.argv[1]
a, b = (json.load(open(f"{o}/{r}/metrics.json")) for r in ("resume-full", "resume-killed"))
print("uninterrupted val acc", a["val_accuracy"], " killed+resumed val acc", b["val_accuracy"])
print("history equal:", [round(h["val_loss"], 6) for h in a["history"]] == [round(h["val_loss"], 6) for h in b["history"]])
PY
  ;;
ddp)  # 2-process gloo DDP vs 1 process on the 200-image subset (made by the resume stage), 1 epoch
  ARGS="--mode finetune --epochs 1 --batch-size 16 --quiet --json"
  t $TL train "$OUT/pets200.csv" $ARGS --out "$OUT/ddp1"
  t $TL train "$OUT/pets200.csv" $ARGS --nproc 2 --out "$OUT/ddp2"
  .venv/bin/python - "$OUT" <<'PY'
import json, sys
o = sys.argv[1]
a, b = (json.load(open(f"{o}/{r}/metrics.json")) for r in ("ddp1", "ddp2"))
print("1 proc", a["val_accuracy"], a["seconds"], " 2 procs", b["val_accuracy"], b["seconds"])
print("same metrics keys:", sorted(a) == sorted(b), sorted(set(a) ^ set(b)))
PY
  ;;
esac; done
