# GliomaGen paper-scale image: CUDA runtime + Python 3.11 + the pinned project.
# Build:  docker build -t gliomagen:0.1.0 .
# Run:    docker run --gpus all -v /data/BraTS2024-GLI-post:/data/brats -v $PWD/runs:/opt/gliomagen/runs \
#             gliomagen:0.1.0 gliomagen reproduce --profile paper --set data.raw_dir=/data/brats
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TORCH_HOME=/opt/torch-cache

RUN apt-get update && apt-get install -y --no-install-recommends \
        software-properties-common ca-certificates curl git make \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential \
        pandoc texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended \
        chromium-browser \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/gliomagen
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

COPY pyproject.toml README.md ./
COPY gliomagen ./gliomagen
# pyradiomics (for frd-score) has no Python 3.11 wheel: build it against numpy before the project.
RUN pip install --upgrade pip setuptools wheel \
    && pip install torch==2.14.1 torchvision==0.29.1 versioneer numpy \
    && pip install --no-build-isolation pyradiomics==3.0.1 \
    && pip install -e ".[dev]"

# Fetch the feature-extractor weights now, while the build has internet; runs are offline afterwards.
RUN gliomagen fetch-weights

COPY . .

ENTRYPOINT []
CMD ["gliomagen", "reproduce", "--profile", "paper"]
