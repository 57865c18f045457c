#!/usr/bin/env bash
# The PSA pipeline on VOC 2012 as a chain of SLURM jobs: training stages as torchrun jobs,
# per-image stages as array jobs; each job starts when the previous one succeeded
# (afterok waits for every task of an array).
#
# Usage: pipelines/slurm/submit_psa.sh VOC2012_DIR WORKDIR RES38_WEIGHTS
# Environment: SHARDS (array tasks per per-image stage; default 8), GPUS (per training
#              job; default 4), CPUS (per array task, used by the CRF; default 8),
#              WSSS_VENV (virtual environment to activate in the jobs), SBATCH_ARGS
#              (extra sbatch options for every job, e.g. "--partition=gpu --account=me"),
#              METHOD (train-cls --method; default cam; submit_seam.sh sets seam).
# Prints the job ids; `squeue --me` follows them. Rerunning the script after a failure
# redoes only what is missing (finished stages and images are skipped).
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 VOC2012_DIR WORKDIR RES38_WEIGHTS" >&2
    exit 2
fi
data=$1
work=$2
weights=$3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shards=${SHARDS:-8}
gpus=${GPUS:-4}
cpus=${CPUS:-8}
read -r -a extra <<< "${SBATCH_ARGS:-}"
mkdir -p "$work/slurm"
common=(--parsable --chdir "$work/slurm" --export=ALL "${extra[@]}")
array=(--array="0-$((shards - 1))" --cpus-per-task="$cpus")
io=(--data "$data" --workdir "$work")

# submit JOB_ARGS...: sbatch after the previous job succeeded; prints and remembers the id
previous=""
submit() {
    local after=()
    if [[ -n $previous ]]; then
        after=(--dependency="afterok:$previous")
    fi
    previous=$(sbatch "${common[@]}" "${after[@]}" "$@")
    echo "$previous $*" | cut -c1-160
}

submit --gpus-per-node="$gpus" "$here/train.sbatch" train-cls "${io[@]}" --split train_aug \
    --backbone resnet38 --pretrained "$weights" --method "${METHOD:-cam}" --resume
submit "${array[@]}" --gpus=1 "$here/stage.sbatch" dump-cams "${io[@]}" --split train_aug
submit "${array[@]}" "$here/stage.sbatch" make-aff-labels "${io[@]}" --split train_aug \
    --jobs "$cpus"
submit --gpus-per-node="$gpus" "$here/train.sbatch" train-aff "${io[@]}" --split train_aug \
    --backbone resnet38 --pretrained "$weights" --resume
submit "${array[@]}" --gpus=1 "$here/stage.sbatch" random-walk "${io[@]}" --split train_aug --jobs "$cpus"
submit --gpus-per-node="$gpus" "$here/train.sbatch" train-seg "${io[@]}" --split train_aug \
    --backbone resnet38 --pretrained "$weights" --head largefov --val-split val --resume
submit "${array[@]}" --gpus=1 "$here/stage.sbatch" predict "${io[@]}" --split val \
    --scales 1.0,0.5,1.5,2.0 --crf --jobs "$cpus"
submit "$here/stage.sbatch" eval --pred "$work/pred/val" --gt "$data/SegmentationClass" \
    --ids "$data/ImageSets/Segmentation/val.txt" --out "$work/eval/seg_val.json"
