"""Shared fixtures: one real ComfyUI per test session (CPU, free 127.0.0.1 port, test custom nodes loaded),
and the random-weight SD1.5 checkpoint (its outputs are noise)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pyworker.comfy_ws import ComfyClient
from pyworker.embedded import DEFAULT_HOME, EmbeddedComfyUI, ensure_demo_checkpoint

TESTS = Path(__file__).resolve().parent
COMFY_HOME = Path(os.environ.get("PYWORKER_COMFYUI_HOME", DEFAULT_HOME))


def make_base(root: Path) -> Path:
    """A ComfyUI base directory with the test nodes and the shared checkpoints folder."""
    (root / "custom_nodes").mkdir(parents=True)
    shutil.copy(TESTS / "comfy_nodes" / "pyworker_test_nodes.py", root / "custom_nodes")
    (root / "models").mkdir()
    shared = COMFY_HOME / "base" / "models" / "checkpoints"
    shared.mkdir(parents=True, exist_ok=True)
    (root / "models" / "checkpoints").symlink_to(shared)
    return root


@pytest.fixture(scope="session")
async def demo_checkpoint() -> str:
    """The random-weight SD1.5-layout checkpoint's name (generated once, cached): outputs are noise."""
    return await ensure_demo_checkpoint(COMFY_HOME, COMFY_HOME / "base" / "models" / "checkpoints")


@pytest.fixture(scope="session")
async def comfy(tmp_path_factory: pytest.TempPathFactory, demo_checkpoint: str) -> AsyncIterator[EmbeddedComfyUI]:
    base = make_base(tmp_path_factory.mktemp("comfy-base"))
    async with EmbeddedComfyUI(home=COMFY_HOME, base=base) as proc:
        yield proc


@pytest.fixture
async def client(comfy: EmbeddedComfyUI) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(comfy.url, output_dir=comfy.output_dir) as c:
        await c.wait_connected(10)
        yield c


def steps_graph(steps: int = 5, step_seconds: float = 0.01, seed: int | None = None) -> dict[str, Any]:
    seed = uuid.uuid4().int % 2**62 if seed is None else seed
    return {"1": {"class_type": "PyworkerSteps", "inputs": {"steps": steps, "step_seconds": step_seconds,
                                                             "seed": seed}}}


def outputs_graph(seed: int | None = None, file_mb: float = 0.01) -> dict[str, Any]:
    seed = uuid.uuid4().int % 2**62 if seed is None else seed
    return {"1": {"class_type": "PyworkerOutputs", "inputs": {"seed": seed, "file_mb": file_mb,
                                                               "work_seconds": 0.0}}}
