# CUDA runtime image with wsss installed. Build: docker build -t wsss .
# Run:   docker run --gpus all -v /data/VOC2012:/data -v $PWD/runs:/runs wsss \
#          train-cls --data /data --workdir /runs/voc --backbone resnet38 --pretrained /runs/res38.pth
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# g++ and the Python headers build pydensecrf2 (no wheel is published for it)
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/wsss
ENV PATH=/opt/wsss/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY wsss_cli ./wsss_cli
# torch==2.13.0 from PyPI is the CUDA build on x86-64 Linux
RUN pip install . && rm -rf /src

RUN useradd --create-home --uid 1000 wsss
USER wsss
WORKDIR /home/wsss
ENTRYPOINT ["wsss"]
CMD ["--help"]
