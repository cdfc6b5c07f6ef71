"""Shared fixtures: one real ComfyUI per test session (CPU, free 127.0.0.1 port, test custom nodes loaded),
and the random-weight SD1.5 checkpoint (its outputs are noise)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pyworker.comfy_ws import ComfyClient
from pyworker.embedded import DEFAULT_HOME, EmbeddedComfyUI, ensure_demo_checkpoint
from pyworker.http.app import create_app
from pyworker.settings import from_env
from tests.servers import SeaweedFS

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


@pytest.fixture(scope="session")
async def seaweed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SeaweedFS]:
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


WorkerFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def make_worker(comfy: EmbeddedComfyUI, tmp_path: Path) -> AsyncIterator[WorkerFactory]:
    """Start the worker app (a real aiohttp server on 127.0.0.1) on the session's ComfyUI, settings overridable."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(wait_ready: bool = True, **overrides: Any) -> TestClient[web.Request, web.Application]:
        base = from_env({}, comfyui_url=comfy.url, comfyui_output_dir=str(comfy.output_dir),
                        worker_data_dir=str(tmp_path / "worker-data"))
        settings = msgspec.structs.replace(base, **overrides)
        client = TestClient(TestServer(create_app(settings), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        if wait_ready:
            await wait_until_ready(client)
        return client

    yield make
    for c in clients:
        await c.close()


async def wait_until_ready(client: TestClient[web.Request, web.Application], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (await client.get("/health")).status != 200:
        assert time.monotonic() < deadline, "the worker did not become ready"
        await asyncio.sleep(0.05)


@pytest.fixture
async def worker(make_worker: WorkerFactory) -> TestClient[web.Request, web.Application]:
    return await make_worker()
