"""What the benchmarks share: a real ComfyUI with the test nodes, SeaweedFS, the worker as its own process
(`python -m pyworker serve`, JSON logs captured), percentiles and the side-by-side printout."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyworker.embedded import EmbeddedComfyUI, free_port  # noqa: E402
from pyworker.remote import percentile  # noqa: E402
from tests.conftest import make_base  # noqa: E402
from tests.servers import SeaweedFS  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return percentile(values, q) if values else float("nan")


def median(values: list[float]) -> float:
    return pct(values, 50)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def common_args(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--comfy-url", help="a running ComfyUI with tests/comfy_nodes loaded (default: start one)")
    parser.add_argument("--comfy-output-dir", help="its output folder, when --comfy-url is given")
    return parser


@contextlib.asynccontextmanager
async def comfyui(args: argparse.Namespace) -> AsyncIterator[tuple[str, Path]]:
    if args.comfy_url:
        yield args.comfy_url, Path(args.comfy_output_dir)
        return
    with tempfile.TemporaryDirectory(prefix="pyworker-bench-") as tmp:
        async with EmbeddedComfyUI(base=make_base(Path(tmp) / "base")) as comfy:
            yield comfy.url, comfy.output_dir


@contextlib.asynccontextmanager
async def seaweedfs() -> AsyncIterator[SeaweedFS]:
    with tempfile.TemporaryDirectory(prefix="pyworker-bench-s3-") as tmp:
        server = SeaweedFS(Path(tmp))
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


class WorkerProcess:
    """``python -m pyworker serve`` on a free port, its JSON log lines collected."""

    def __init__(self, comfy_url: str, output_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "COMFYUI_OUTPUT_DIR": str(output_dir), "LOG_FORMAT": "json", "BENCHMARK": "off",
                    "WORKER_PORT": str(self.port), **env}
        self.comfy_url = comfy_url
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WorkerProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyworker", "serve", "--host", "127.0.0.1", "--comfy-url", self.comfy_url,
            cwd=ROOT, env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        self._reader = asyncio.create_task(self._read())
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.url + "/health") as resp:
                        if resp.status == 200:
                            return self
                if time.monotonic() > deadline or self.proc.returncode is not None:
                    raise RuntimeError("the worker did not become ready")
                await asyncio.sleep(0.1)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            with contextlib.suppress(ValueError):
                self.log.append(json.loads(line))

    def executed(self) -> dict[str, dict[str, Any]]:
        """ComfyUI's own start and end (ms) of each prompt, from the job log."""
        return {e["prompt_id"]: e for e in self.log if e.get("state") == "executed" and e.get("comfy_start_ms")}

    @property
    def rss_mb(self) -> float:
        assert self.proc is not None
        return rss_mb(self.proc.pid)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"
