#!/usr/bin/env bash
# Issue 2 acceptance figures: linear probe on PetImages and the Oxford-IIIT Pet subset, and the
# cached second run. Usage: bash benchmarks/spine.sh [OUTDIR]   (uses a fresh feature cache)
set -euo pipefail
out=${1:-/tmp/transferlab-spine}
export TRANSFERLAB_CACHE=$out/cache
rm -rf "$out"; mkdir -p "$out"
TL=${TL:-.venv/bin/transferlab}
data=../shared/data
t() { /usr/bin/time -f "%e s wall, %M KB max RSS" "$@"; }

echo "== PetImages, seeded 80/20, linear, first run (extracts 5,999 images)"
t $TL train $data/petimages --backbone efficientnet_lite0 --mode linear --out "$out/pets" --json -q
echo "== same again: features from the cache"
t $TL train $data/petimages --backbone efficientnet_lite0 --mode linear --out "$out/pets2" --json -q
echo "== Oxford subset: train on official trainval (all 710, C by 5-fold CV), test on official test"
t $TL train $data/oxford-pets-subset --label breed --val-fraction 0 --out "$out/oxford" --json -q
t $TL evaluate "$out/oxford" $data/oxford-pets-subset --split test --json -q | head -4
echo "== Oxford subset with the default 20 % validation hold-out"
t $TL train $data/oxford-pets-subset --label breed --out "$out/oxford-val" --json -q
t $TL evaluate "$out/oxford-val" $data/oxford-pets-subset --split test --json -q | head -4
