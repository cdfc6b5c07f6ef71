# make run   set everything up and serve POST /generate/sync on :3000 (embedded ComfyUI, CPU without a GPU)
# make demo  set everything up and run the SD1.5 default graph once through the driver, with live progress
# make test  set everything up, run the tests (real ComfyUI on a free port), ruff and mypy
# make bench the performance benchmarks (benchmarks/README.md)
# make setup everything: the worker's .venv, the embedded ComfyUI in .comfyui/, the demo checkpoint

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COMFY := .comfyui

.PHONY: setup venv comfyui checkpoint run demo test lint bench clean

setup: venv comfyui checkpoint

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | grep -v 'is ignored' || true
	$(BIN)/python -c "import pyworker, aiohttp, websockets, msgspec, aiobotocore, pytest_asyncio"
	touch $@

comfyui:
	bash misc/comfyui/setup.sh

# The random-weight SD1.5-layout checkpoint: ITS OUTPUTS ARE NOISE. Cached; seconds to generate.
checkpoint: comfyui
	PYTHONPATH=misc/comfyui/torchvision_stub $(COMFY)/venv/bin/python misc/comfyui/make_checkpoint.py \
		--comfyui $(COMFY)/ComfyUI --out-dir $(COMFY)/base/models/checkpoints

run: setup
	$(BIN)/python -m pyworker serve

demo: setup
	$(BIN)/python -m pyworker run-workflow misc/workflows/sd15_default.json --demo-checkpoint \
		--width 256 --height 256

test: setup lint
	$(BIN)/python -m pytest

# The performance benchmarks (benchmarks/README.md): a few minutes each on 2 cores, figures side by side.
bench: setup
	$(BIN)/python -m benchmarks.added_latency
	$(BIN)/python -m benchmarks.gpu_idle_gap
	$(BIN)/python -m benchmarks.upload_throughput
	$(BIN)/python -m benchmarks.memory
	$(BIN)/python -m benchmarks.frontend_capacity

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(COMFY)
