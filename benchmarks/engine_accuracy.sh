#!/usr/bin/env bash
# Issue 16: linear-probe accuracy per engine / precision, through the CLI, each with its own fresh
# feature cache (torch fp32 and onnxruntime fp32 would otherwise share one).
#   PetImages: seeded 80/20, validation accuracy.  Oxford subset: all of trainval (C by 5-fold CV)
#   -> official test.  Usage: bash benchmarks/engine_accuracy.sh [OUTDIR]   (run alone: it times too)
set -euo pipefail
out=${1:-/tmp/transferlab-engine-accuracy}
TL=${TL:-.venv/bin/transferlab}
PY=${PY:-.venv/bin/python}
data=../shared/data
rm -rf "$out"; mkdir -p "$out"
grep -o -E 'avx512_bf16|amx_bf16|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
for e in "torch 0" "torch 1" "onnxruntime 0"; do
  set -- $e
  tag="$1-$([ "$2" = 1 ] && echo bf16 || echo fp32)"
  export TRANSFERLAB_ENGINE=$1 TRANSFERLAB_BF16=$2 TRANSFERLAB_CACHE=$out/cache-$tag
  s=$(date +%s.%N)
  $TL train $data/petimages --out "$out/$tag-pets" --json -q > "$out/$tag-pets.json"
  $TL train $data/oxford-pets-subset --label breed --val-fraction 0 --out "$out/$tag-oxford" --json -q > /dev/null
  $TL evaluate "$out/$tag-oxford" $data/oxford-pets-subset --split test --json -q > "$out/$tag-oxford-test.json"
  secs=$(echo "$(date +%s.%N) - $s" | bc)
  $PY - "$out" "$tag" "$secs" <<'PY'
import json, sys
out, tag, secs = sys.argv[1:]
pets = json.load(open(f"{out}/{tag}-pets/metrics.json"))["val_accuracy"]
ox = json.load(open(f"{out}/{tag}-oxford-test.json"))["accuracy"]
print(f"| {tag} | {100 * pets:.2f} % | {100 * ox:.2f} % | {float(secs):.0f} s |")
PY
done
