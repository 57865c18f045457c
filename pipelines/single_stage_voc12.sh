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

# shellcheck source=pipelines/voc_common.bash
source "$(dirname "${BASH_SOURCE[0]}")/voc_common.bash"
voc_arguments "$0" "$@"
scales=${SCALES:-1.0,0.5,1.5,2.0}

wsss_train train-single-stage --data "$data" --workdir "$work" --split train_aug \
    --backbone resnet38 --pretrained "$weights" --resume
wsss predict --workdir "$work" --data "$data" --split val --model "$work/single_stage/model.pt" \
    --scales "$scales" --crf --jobs "$jobs"
wsss eval --pred "$work/pred/val" --gt "$data/SegmentationClass" \
    --ids "$data/ImageSets/Segmentation/val.txt" --out "$work/eval/single_stage_val.json"
