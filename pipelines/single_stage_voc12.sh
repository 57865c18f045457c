#!/usr/bin/env bash
# Single-stage WSSS (Araslanov & Roth, CVPR 2020) on PASCAL VOC 2012: one network trained
# from image-level labels (nGWP + focal penalty + PAMR + stochastic gate), then val mIoU.
#
# Usage: pipelines/single_stage_voc12.sh VOC2012_DIR WORKDIR [RES38_WEIGHTS]
#   VOC2012_DIR    VOCdevkit/VOC2012 with the SBD-augmented train_aug split
#   RES38_WEIGHTS  ImageNet ResNet-38 (.pth, PSA's conversion), or set RES38_WEIGHTS=...
# Environment: NPROC (GPUs for training, via torchrun; default 1), JOBS (CRF processes),
#              SCALES (inference scales; default 1.0,0.5,1.5,2.0).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 VOC2012_DIR WORKDIR [RES38_WEIGHTS]" >&2
    exit 2
fi
data=$1
work=$2
weights=${3:-${RES38_WEIGHTS:-}}
if [[ -z $weights || ! -f $weights ]]; then
    echo "$0: give the ResNet-38 ImageNet weights (.pth) as 3rd argument or RES38_WEIGHTS" >&2
    exit 2
fi
nproc=${NPROC:-1}
jobs=${JOBS:-$(nproc)}
scales=${SCALES:-1.0,0.5,1.5,2.0}

# one process per GPU; --batch-size is per process
wsss_train() {
    if [[ $nproc -gt 1 ]]; then
        torchrun --standalone --nproc_per_node "$nproc" -m wsss_cli "$@"
    else
        wsss "$@"
    fi
}

wsss_train train-single-stage --data "$data" --workdir "$work" --split train_aug \
    --backbone resnet38 --pretrained "$weights" --resume
wsss predict --workdir "$work" --data "$data" --split val --model "$work/single_stage/model.pt" \
    --scales "$scales" --crf --jobs "$jobs"
wsss eval --pred "$work/pred/val" --gt "$data/SegmentationClass" \
    --ids "$data/ImageSets/Segmentation/val.txt" --out "$work/eval/single_stage_val.json"
