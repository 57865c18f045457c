#!/usr/bin/env bash
# The toy recipe, stage by stage (what `wsss demo` does), on the CPU.
# Usage: pipelines/toy.sh [WORKDIR]   (default: runs/toy)
set -euo pipefail
work=${1:-runs/toy}
data=$work/data

[ -f "$data/classes.txt" ] || wsss toy-data "$data"
wsss train-cls       --data "$data" --workdir "$work" --backbone tiny --pretrained none
wsss dump-cams       --data "$data" --workdir "$work"
wsss eval-cams       --data "$data" --workdir "$work" --crf --jobs 2
wsss make-aff-labels --data "$data" --workdir "$work" --jobs 2
wsss train-aff       --data "$data" --workdir "$work"
wsss random-walk     --data "$data" --workdir "$work" --jobs 2
wsss eval --pred "$work/pseudo" --gt "$data/SegmentationClass" --classes "$data/classes.txt" \
    --ids "$data/ImageSets/Segmentation/train.txt" --out "$work/eval/pseudo_train.json"
wsss train-seg       --data "$data" --workdir "$work" --backbone tiny --val-split val
wsss predict         --data "$data" --workdir "$work" --split val --crf --jobs 2
wsss eval --pred "$work/pred/val" --gt "$data/SegmentationClass" --classes "$data/classes.txt" \
    --ids "$data/ImageSets/Segmentation/val.txt" --out "$work/eval/seg_val.json"
wsss report          --workdir "$work" --data "$data"
