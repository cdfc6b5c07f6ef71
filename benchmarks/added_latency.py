"""1. Added latency: a tiny model-free workflow (unique per request, so ComfyUI's cache never serves it) through
the worker's POST /generate/sync, against the same workflow driven by a minimal hand-written client (POST
/prompt, wait on the websocket, GET /history), interleaved A B A B on the same running ComfyUI.
Target: worker p50 <= direct p50 + 2 ms, p99 <= direct p99 + 10 ms."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

import aiohttp
from websockets.asyncio.client import connect

from benchmarks.harness import WorkerProcess, comfyui, common_args, pct, verdict


def tiny() -> dict[str, Any]:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                         "color": random.randint(0, 0xFFFFFF)}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}


class DirectClient:
    """The minimal correct client: its own websocket, POST /prompt, wait for the end, GET /history."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url, self.http = url, http
        self.client_id = uuid.uuid4().hex

    async def __aenter__(self) -> DirectClient:
        self.ws = await connect(self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}",
                                max_size=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def run(self, workflow: dict[str, Any]) -> None:
        async with self.http.post(self.url + "/prompt", json={"prompt": workflow,
                                                              "client_id": self.client_id}) as resp:
            prompt_id = (await resp.json())["prompt_id"]
        async for frame in self.ws:
            if isinstance(frame, str):
                msg = json.loads(frame)
                if msg["type"] == "executing" and msg["data"].get("node") is None \
                        and msg["data"].get("prompt_id") == prompt_id:
                    break
        async with self.http.get(self.url + f"/history/{prompt_id}") as resp:
            assert prompt_id in await resp.json()


async def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("-n", type=int, default=200, help="requests on each side")
    args = parser.parse_args()
    async with comfyui(args) as (comfy_url, output_dir), WorkerProcess(comfy_url, output_dir) as worker, \
            aiohttp.ClientSession() as http, DirectClient(comfy_url, http) as direct:
        async def via_worker() -> float:
            t0 = time.perf_counter()
            async with http.post(worker.url + "/generate/sync", json={"input": {"workflow_json": tiny()}}) as resp:
                await resp.read()
                assert resp.status == 200, await resp.text()
            return (time.perf_counter() - t0) * 1000

        async def via_direct() -> float:
            t0 = time.perf_counter()
            await direct.run(tiny())
            return (time.perf_counter() - t0) * 1000

        for _ in range(10):  # warm-up of both paths
            await via_worker()
            await via_direct()
        a: list[float] = []
        b: list[float] = []
        for _ in range(args.n):
            a.append(await via_worker())
            b.append(await via_direct())
    p50 = (pct(a, 50), pct(b, 50))
    p99 = (pct(a, 99), pct(b, 99))
    print(f"added latency, {args.n} requests each side, interleaved, tiny model-free workflow")
    print(f"  worker  p50 {p50[0]:7.2f} ms  p90 {pct(a, 90):7.2f}  p99 {p99[0]:7.2f}")
    print(f"  direct  p50 {p50[1]:7.2f} ms  p90 {pct(b, 90):7.2f}  p99 {p99[1]:7.2f}")
    print(f"  worker - direct: p50 {p50[0] - p50[1]:+.2f} ms (target <= +2: {verdict(p50[0] - p50[1] <= 2)}), "
          f"p99 {p99[0] - p99[1]:+.2f} ms (target <= +10: {verdict(p99[0] - p99[1] <= 10)}); "
          f"ratio p50 {p50[0] / p50[1]:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
