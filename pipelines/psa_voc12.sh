#!/usr/bin/env bash
# PSA (Ahn & Kwak, CVPR 2018) on PASCAL VOC 2012, every stage in one workdir:
#   classifier -> CAMs -> affinity labels -> AffinityNet -> random walk -> DeepLab -> val mIoU.
#
# Usage: pipelines/psa_voc12.sh VOC2012_DIR WORKDIR [RES38_WEIGHTS]
#   VOC2012_DIR    VOCdevkit/VOC2012 with the SBD-augmented train_aug split
#                  (ImageSets/Segmentation/train_aug.txt and SegmentationClassAug/)
#   RES38_WEIGHTS  PSA's ImageNet ResNet-38 converted to .pth
#                  (ilsvrc-cls_rna-a1_cls1000_ep-0001.pth), or set RES38_WEIGHTS=...
# Environment: NPROC (GPUs for the training stages, via torchrun; default 1),
#              JOBS (CPU processes for the dense CRF; default: all cores),
#              METHOD (the classifier's CAM method, train-cls --method; default cam;
#              seam_voc12.sh sets seam, whose presets follow it through every stage).
#
# Every stage skips work that is already done with the same settings, so the script can
# be run again after an interruption; training stages resume with --resume.
set -euo pipefail

# shellcheck source=pipelines/voc_common.bash
source "$(dirname "${BASH_SOURCE[0]}")/voc_common.bash"
voc_arguments "$0" "$@"

wsss_train train-cls --data "$data" --workdir "$work" --split train_aug \
    --backbone resnet38 --pretrained "$weights" --method "${METHOD:-cam}" --resume
wsss dump-cams       --data "$data" --workdir "$work" --split train_aug
wsss eval-cams       --data "$data" --workdir "$work" --split train --jobs "$jobs"
wsss make-aff-labels --data "$data" --workdir "$work" --split train_aug --jobs "$jobs"
wsss_train train-aff --data "$data" --workdir "$work" --split train_aug \
    --backbone resnet38 --pretrained "$weights" --resume
wsss random-walk     --data "$data" --workdir "$work" --split train_aug --jobs "$jobs"
wsss eval --pred "$work/pseudo" --gt "$data/SegmentationClassAug" \
    --ids "$data/ImageSets/Segmentation/train.txt" --out "$work/eval/pseudo_train.json"
wsss_train train-seg --data "$data" --workdir "$work" --split train_aug \
    --backbone resnet38 --pretrained "$weights" --head largefov --val-split val --resume
wsss predict --workdir "$work" --data "$data" --split val --scales 1.0,0.5,1.5,2.0 --crf \
    --jobs "$jobs"
wsss eval --pred "$work/pred/val" --gt "$data/SegmentationClass" \
    --ids "$data/ImageSets/Segmentation/val.txt" --out "$work/eval/seg_val.json"
