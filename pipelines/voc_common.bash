# Sourced by the VOC pipeline scripts: their arguments and the training launcher.
#   voc_arguments "$0" "$@"  sets data, work, weights (3rd argument or RES38_WEIGHTS: PSA's
#                            ImageNet ResNet-38 converted to .pth), nproc (NPROC, default 1)
#                            and jobs (JOBS, default all cores); exits 2 on bad arguments.
#   wsss_train COMMAND ...   a training stage: one process per GPU under torchrun when
#                            NPROC > 1 (--batch-size is per process), else plain wsss.

voc_arguments() {
    local script=$1
    shift
    if [[ $# -lt 2 ]]; then
        echo "usage: $script VOC2012_DIR WORKDIR [RES38_WEIGHTS]" >&2
        exit 2
    fi
    data=$1
    work=$2
    weights=${3:-${RES38_WEIGHTS:-}}
    if [[ -z $weights || ! -f $weights ]]; then
        echo "$script: give PSA's converted ResNet-38 weights (.pth) as 3rd argument or RES38_WEIGHTS" >&2
        exit 2
    fi
    nproc=${NPROC:-1}
    jobs=${JOBS:-$(nproc)}
}

wsss_train() {
    if [[ $nproc -gt 1 ]]; then
        torchrun --standalone --nproc_per_node "$nproc" -m wsss_cli "$@"
    else
        wsss "$@"
    fi
}
