#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for misc/gpu/bench_on_gpu.sh on a GPU machine without network (Python 3.12,
# PyTorch, transformers ... already there): the wheels ComfyUI and the worker lack there, the av stub (PyAV is
# imported at ComfyUI's start-up, never used by the SD1.5 graph; its wheel is 40 MB) and a dummy frontend page.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rm -rf .gpu && mkdir -p .gpu/whl .gpu/frontend .gpu/stubs
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .gpu/whl msgspec==0.22.0 websockets==17.4 torchsde==0.2.6 trampoline==0.1.2
cp -r misc/gpu/stubs/av .gpu/stubs/
cp misc/gpu/frontend.html .gpu/frontend/index.html
du -sh .gpu
