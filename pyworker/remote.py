"""A client of a worker: one request, direct or through an autoscaler's route URL, and a load tester.

Through an autoscaler: POST {route_url} ``{"endpoint", "api_key", "cost"}`` answers the signed ``auth_data``
(with the chosen worker's ``url``); the request then goes to ``{url}/generate/sync`` in the envelope."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import random
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import aiohttp
import msgspec


class WorkerClient:
    def __init__(self, session: aiohttp.ClientSession, *, worker_url: str | None = None,
                 route_url: str | None = None, endpoint: str = "", api_key: str = "", cost: float = 1.0,
                 timeout: float = 3600.0) -> None:
        if (worker_url is None) == (route_url is None):
            raise ValueError("give a worker URL or an autoscaler route URL")
        self.session = session
        self.worker_url, self.route_url = worker_url, route_url
        self.endpoint, self.api_key, self.cost = endpoint, api_key, cost
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST one request; returns the HTTP status and the JSON answer."""
        if self.route_url is not None:
            async with self.session.post(self.route_url, json={"endpoint": self.endpoint, "api_key": self.api_key,
                                                               "cost": self.cost}, timeout=self.timeout) as resp:
                if resp.status != 200:
                    return resp.status, {"error": f"route answered {resp.status}: {(await resp.text())[:200]}"}
                auth = await resp.json()
            url = str(auth["url"]).rstrip("/") + "/generate/sync"
            body: dict[str, Any] = {"auth_data": auth, "payload": payload, "session_id": None}
        else:
            url = str(self.worker_url).rstrip("/") + "/generate/sync"
            body = payload
        async with self.session.post(url, json=body, timeout=self.timeout) as resp:
            try:
                answer: dict[str, Any] = await resp.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                answer = {"error": (await resp.text())[:200]}
            return resp.status, answer


def build_payload(*, prompt: str | None, workflow: Path | None, width: int | None, height: int | None,
                  steps: int | None, seed: int | None, s3: dict[str, str] | None,
                  base64_outputs: bool = False) -> dict[str, Any]:
    """The seed document's request: Text2Image with the given options, or a complete workflow file."""
    inp: dict[str, Any] = {}
    if workflow is not None:
        inp["workflow_json"] = msgspec.json.decode(workflow.read_bytes())
    else:
        mods = {"prompt": prompt, "width": width, "height": height, "steps": steps,
                "seed": seed if seed is not None else random.randint(0, 2**32 - 1)}
        inp["modifier"] = "Text2Image"
        inp["modifications"] = {k: v for k, v in mods.items() if v is not None}
    if s3:
        inp["s3"] = s3
    if base64_outputs:
        inp["return_outputs_as_base64"] = True
    return {"input": inp}


async def save_outputs(session: aiohttp.ClientSession, answer: dict[str, Any], out_dir: Path) -> list[Path]:
    """Each output to ``out_dir``: inline data, else the presigned URL, else the worker's local file."""
    await aiofiles.os.makedirs(out_dir, exist_ok=True)
    saved: list[Path] = []
    for i, item in enumerate(answer.get("output", [])):
        if item.get("text") is not None:
            path = out_dir / f"{answer.get('id', 'job')}_{item.get('node_id', i)}_{i}.txt"
            async with aiofiles.open(path, "w") as f:
                await f.write(item["text"])
        elif item.get("filename"):
            path = out_dir / Path(item["filename"]).name
            if item.get("data"):
                async with aiofiles.open(path, "wb") as f:
                    await f.write(base64.b64decode(item["data"]))
            elif item.get("url"):
                async with session.get(item["url"]) as resp, aiofiles.open(path, "wb") as f:
                    resp.raise_for_status()
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        await f.write(chunk)
            elif item.get("local_path") and await aiofiles.os.path.isfile(item["local_path"]):
                await asyncio.to_thread(shutil.copyfile, item["local_path"], path)
            else:
                continue
        else:
            continue
        saved.append(path)
    return saved


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


class LoadResult(msgspec.Struct):
    sent: int
    ok: int
    errors: dict[str, int]
    latencies_ms: list[float]
    wall_s: float

    def summary(self) -> str:
        lat = self.latencies_ms or [0.0]
        lines = [
            f"{self.sent} requests in {self.wall_s:.1f} s: {self.ok} ok, {self.sent - self.ok} errors; "
            f"throughput {self.ok / self.wall_s if self.wall_s else 0:.2f} completed/s",
            f"latency ms (completed): p50 {percentile(lat, 50):.0f}  p90 {percentile(lat, 90):.0f}  "
            f"p99 {percentile(lat, 99):.0f}  max {max(lat):.0f}  mean {statistics.fmean(lat):.0f}",
        ]
        if self.errors:
            lines.append("errors by kind: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.errors.items())))
        return "\n".join(lines)


async def load(client: WorkerClient, make_payload: Any, n: int, rps: float, *, live: bool = True) -> LoadResult:
    """Open-loop load: ``n`` requests started at ``rps`` a second, whatever the answers; a live status line."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    done = 0
    started = time.monotonic()

    async def one() -> None:
        nonlocal done
        t0 = time.monotonic()
        try:
            status, _ = await client.send(make_payload())
            if status == 200:
                latencies.append((time.monotonic() - t0) * 1000)
            else:
                errors[f"HTTP {status}"] += 1
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            errors[type(exc).__name__] += 1
        finally:
            done += 1

    async def show() -> None:
        while True:
            elapsed = time.monotonic() - started
            print(f"\r[{elapsed:6.1f}s] sent {min(n, int(elapsed * rps) + 1)}/{n}  done {done}  ok {len(latencies)}"
                  f"  errors {sum(errors.values())}", end="", file=sys.stderr, flush=True)
            await asyncio.sleep(0.5)

    display = asyncio.create_task(show()) if live else None
    try:
        async with asyncio.TaskGroup() as group:
            for i in range(n):
                delay = started + i / rps - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                group.create_task(one())
    finally:
        if display is not None:
            display.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await display
            print(file=sys.stderr)
    return LoadResult(sent=n, ok=len(latencies), errors=dict(errors), latencies_ms=latencies,
                      wall_s=time.monotonic() - started)
