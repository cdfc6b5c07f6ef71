# pyworker next to ComfyUI on an NVIDIA GPU machine.
#   docker build -t pyworker .
#   docker run --gpus all -p 3000:3000 -v /models:/app/.comfyui/base/models pyworker
# The embedded ComfyUI gets a CUDA torch here (the CPU pins of misc/comfyui/requirements.txt are for machines
# without a GPU); the worker's own environment never has torch.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip make git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN python3 -m venv .comfyui/venv \
    && .comfyui/venv/bin/pip install --no-cache-dir torch torchvision --index-url https://download.pytorch.org/whl/cu128 \
    && grep -v '^torch==' misc/comfyui/requirements.txt > /tmp/comfyui-requirements.txt \
    && COMFYUI_REQUIREMENTS=/tmp/comfyui-requirements.txt bash misc/comfyui/setup.sh \
    && make venv
ENV WORKER_PORT=3000
EXPOSE 3000
CMD [".venv/bin/python", "-m", "pyworker", "serve"]
