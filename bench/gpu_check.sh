#!/usr/bin/env bash
# The GPU check: run it on a machine with a GPU, from the repository root (under 8 minutes
# on one H100/H200). It needs wsss importable (installed, or PYTHONPATH=.) and the shared
# folder beside the repository (or a copy of its golden/ and data/coco128_voc/): the golden
# vectors for the CUDA tests, a few photos for the CRF bench.
#
#     bash bench/gpu_check.sh OUT [SHARED_DIR]
#
# 0. the tests that run only with CUDA (the CRF's and the walk's, against the CPU);
# 1. bench/crf.py: the dense CRF's backends (pydensecrf when installed, torch CPU, CUDA);
# 2. bench/random_walk.py --device cuda: the sparse walk against the dense one; then on the
#    machine's CPU cores (the native kernel's bands of rows on a many-core CPU);
# 3. bench/cam_methods.py on resnet38 and vgg16 at crop 448: each CAM method's training step
#    against the plain CAM's, time and peak memory;
# 4. `wsss --device cuda demo`: the whole toy pipeline on the GPU (bf16 autocast and
#    channels_last in training, the walk and the CRF on the device), timed;
# 5. with two GPUs or more: a 2-process torchrun train-cls (DDP over NCCL) on the toy data.
# Writes OUT/log.txt (every step's output), OUT/steps.txt, the benches' JSON, the demo's
# table (OUT/demo.json) and OUT/gpu_check.json, and prints one table. The demo's work
# folder goes to a temporary folder.
set -uo pipefail
OUT=${1:?usage: bench/gpu_check.sh OUT [SHARED_DIR]}
export WSSS_SHARED=${2:-../shared}
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

step() {  # name, command...: runs it into OUT/log.txt, records exit status and seconds
    local name=$1; shift
    local t0=$SECONDS
    echo "=== $name: $*" >>"$OUT/log.txt"
    "$@" >>"$OUT/log.txt" 2>&1
    local rc=$?
    echo "$name $rc $((SECONDS - t0))" >>"$OUT/steps.txt"
    echo "$name: exit $rc, $((SECONDS - t0)) s"
}

: >"$OUT/steps.txt"
: >"$OUT/log.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
GPUS=$(nvidia-smi -L | wc -l)
step cuda_tests "$PY" -m pytest -q -p no:cacheprovider tests/test_crf_torch.py \
    tests/test_ops_random_walk.py -k cuda
step crf "$PY" bench/crf.py --data "$WSSS_SHARED/data/coco128_voc" --out "$OUT/crf.json" --repeats 2
step random_walk "$PY" bench/random_walk.py --device cuda --json "$OUT/random_walk.json"
step random_walk_cpu "$PY" bench/random_walk.py --device cpu --json "$OUT/random_walk_cpu.json"
step cam_methods "$PY" bench/cam_methods.py --backbones resnet38,vgg16 --methods cam,seam,has,acol,mdc \
    --crop 448 --batch 8 --device cuda --json "$OUT/cam_methods.json"
step demo "$PY" -m wsss_cli --device cuda demo --workdir "$WORK/demo" --jobs 4 --workers 4
cp "$WORK/demo/eval/demo.json" "$OUT/demo.json" 2>/dev/null
if [ "$GPUS" -ge 2 ]; then
    step ddp torchrun --standalone --nproc_per_node 2 -m wsss_cli --device cuda train-cls \
        --data "$WORK/demo/data" --workdir "$WORK/ddp" --backbone tiny --epochs 2
fi
"$PY" bench/gpu_summary.py "$OUT"
