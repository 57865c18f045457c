#!/usr/bin/env bash
# IAL (Wang, Liu, Ma, Yang, IJCV 2020) on PASCAL VOC 2012: PSA's classifier and CAM seeds,
# five EM rounds of unary network (train-seg's DeepLab) + pairwise network (a spatial
# propagation network on mined confident regions), then DeepLab on the last round's labels.
#
# Usage: pipelines/ial_voc12.sh VOC2012_DIR WORKDIR [RES38_WEIGHTS]
#   VOC2012_DIR    VOCdevkit/VOC2012 with the SBD-augmented train_aug split
#                  (ImageSets/Segmentation/train_aug.txt and SegmentationClassAug/)
#   RES38_WEIGHTS  PSA's ImageNet ResNet-38 converted to .pth, or set RES38_WEIGHTS=...
#                  (the classifier, the unary and the pairwise networks start from it)
# Environment: NPROC (GPUs for train-cls and the last train-seg, via torchrun; default 1;
#              IAL's rounds train on one), JOBS (CPU processes for the dense CRF; default:
#              all cores), ROUNDS (default 5, the paper's).
#
# Every stage, and every stage of every round, skips work already done with the same
# settings and resumes a killed training: run the script again after an interruption.
set -euo pipefail

# shellcheck source=pipelines/voc_common.bash
source "$(dirname "${BASH_SOURCE[0]}")/voc_common.bash"
voc_arguments "$0" "$@"
rounds=${ROUNDS:-5}

wsss_train train-cls --data "$data" --workdir "$work" --split train_aug \
    --backbone resnet38 --pretrained "$weights" --resume
wsss make-pseudo --method ial --rounds "$rounds" --data "$data" --workdir "$work" \
    --split train_aug --pretrained "$weights" --jobs "$jobs"
# every round's pseudo-labels on the train images that have ground truth (round 0: the seeds)
for round in $(seq 1 "$rounds"); do
    wsss eval --pred "$work/ial/round$round/labels" --gt "$data/SegmentationClassAug" \
        --ids "$data/ImageSets/Segmentation/train.txt" --out "$work/eval/ial_round${round}_train.json"
done
wsss_train train-seg --data "$data" --workdir "$work" --split train_aug \
    --backbone resnet38 --pretrained "$weights" --head largefov --val-split val --resume
wsss predict --workdir "$work" --data "$data" --split val --scales 1.0,0.5,1.5,2.0 --crf \
    --jobs "$jobs"
wsss eval --pred "$work/pred/val" --gt "$data/SegmentationClass" \
    --ids "$data/ImageSets/Segmentation/val.txt" --out "$work/eval/seg_val.json"
