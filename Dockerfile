# CUDA runtime image with wsss installed; `wsss` is the entry point.
#
# Build (from the repository root):
#   docker build -t wsss .
# Run a stage (GPUs, data read-only, results in ./runs owned by you):
#   docker run --rm --gpus all --ipc=host --user "$(id -u):$(id -g)" \
#     -v /data/VOCdevkit/VOC2012:/data:ro -v "$PWD/runs:/runs" -v "$HOME/.cache/torch:/cache/torch" \
#     wsss train-cls --data /data --workdir /runs/voc --backbone resnet38 --pretrained /runs/res38.pth
# Several GPUs (DDP, one process per GPU; --batch-size is per process):
#   docker run ... --entrypoint torchrun wsss --standalone --nproc_per_node 4 -m wsss_cli train-cls ...
# A pipeline script:
#   docker run ... --entrypoint bash wsss /opt/wsss/pipelines/psa_voc12.sh /data /runs/psa /runs/res38.pth
# --ipc=host (or --shm-size=8g): DataLoader workers pass batches through shared memory.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# g++ and the Python headers build pydensecrf2 (no wheel is published for it);
# Ubuntu 24.04's python3 is 3.12 and refuses system-wide pip installs (PEP 668): a venv
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/wsss/venv
ENV PATH=/opt/wsss/venv/bin:$PATH

# Dependencies first, in their own layer: editing the package does not reinstall torch.
# torch==2.13.0 from PyPI is the CUDA build on x86-64 Linux (it brings its CUDA libraries
# as nvidia-* wheels); the check fails the build if a CPU-only wheel slipped in.
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && python3 -c "import torch; assert torch.version.cuda, 'torch is a CPU-only build'; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

COPY README.md ./
COPY wsss_cli ./wsss_cli
RUN pip install --no-deps . && rm -rf /src /tmp/requirements.txt
COPY pipelines /opt/wsss/pipelines

# The base image already has user "ubuntu" with uid 1000; replace it by our own.
# TORCH_HOME: --pretrained imagenet downloads go to a folder any --user can write
# (mount a host folder there to keep them between runs).
RUN userdel --remove ubuntu 2>/dev/null || true; \
    useradd --create-home --uid 1000 wsss \
    && mkdir -p /cache/torch /runs && chmod 1777 /cache /cache/torch /runs
ENV TORCH_HOME=/cache/torch
USER wsss
WORKDIR /runs
ENTRYPOINT ["wsss"]
CMD ["--help"]
