"""2. GPU idle gap: requests queued up front, each a test node that works about 200 ms and writes a few MB of
outputs that go to S3 (SeaweedFS). From ComfyUI's own execution timestamps (the worker's job log), the idle
time between one prompt's end and the next one's start; pipelined (the default) and strictly serial
(PIPELINE=false: submit, wait, upload, then the next), alternating, plus ComfyUI's own floor (the same prompts
POSTed to ComfyUI all at once). Target (pipelined): median gap <= 2 ms, p95 <= 5 ms, and the total within 3 %
of n x the job time."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
import uuid
from typing import Any

import aiohttp
from websockets.asyncio.client import connect

from benchmarks.harness import WorkerProcess, comfyui, common_args, median, pct, seaweedfs, verdict


def job(file_mb: float, work_s: float) -> dict[str, Any]:
    return {"1": {"class_type": "PyworkerOutputs", "inputs": {"seed": random.randint(0, 2**62), "file_mb": file_mb,
                                                               "work_seconds": work_s}}}


def gaps_of(spans: list[tuple[int, int]]) -> tuple[list[float], float, float]:
    """(gaps in ms, total ms from the first start to the last end, median job ms)."""
    spans.sort()
    gaps = [float(b[0] - a[1]) for a, b in itertools.pairwise(spans)]
    total = float(spans[-1][1] - spans[0][0])
    return gaps, total, statistics.median(float(e - s) for s, e in spans)


async def through_worker(comfy_url: str, output_dir: Any, s3_env: dict[str, str], n: int, file_mb: float,
                         work_s: float, pipeline: bool) -> tuple[list[float], float, float]:
    async with WorkerProcess(comfy_url, output_dir, PIPELINE="true" if pipeline else "false", **s3_env) as worker, \
            aiohttp.ClientSession() as http:
        async def one() -> str:
            async with http.post(worker.url + "/generate/sync",
                                 json={"input": {"workflow_json": job(file_mb, work_s)}}) as resp:
                answer = await resp.json()
                assert resp.status == 200 and all("url" in o for o in answer["output"] if o.get("filename")), answer
                return str(answer["prompt_id"])

        ids = await asyncio.gather(*[one() for _ in range(n)])
        await asyncio.sleep(0.2)
        executed = worker.executed()
        return gaps_of([(executed[i]["comfy_start_ms"], executed[i]["comfy_end_ms"]) for i in ids])


async def comfy_floor(comfy_url: str, n: int, file_mb: float, work_s: float) -> tuple[list[float], float, float]:
    client_id = uuid.uuid4().hex
    async with connect(comfy_url.replace("http", "ws", 1) + f"/ws?clientId={client_id}", max_size=None) as ws, \
            aiohttp.ClientSession() as http:
        ids = []
        for _ in range(n):
            async with http.post(comfy_url + "/prompt", json={"prompt": job(file_mb, work_s),
                                                              "client_id": client_id}) as resp:
                ids.append((await resp.json())["prompt_id"])
        done = 0
        async for frame in ws:
            if isinstance(frame, str):
                msg = json.loads(frame)
                if msg["type"] == "executing" and msg["data"].get("node") is None and msg["data"]["prompt_id"] in ids:
                    done += 1
                    if done == n:
                        break
        spans = []
        for pid in ids:
            async with http.get(comfy_url + f"/history/{pid}") as resp:
                msgs = dict((m[0], m[1]) for m in (await resp.json())[pid]["status"]["messages"])
            spans.append((msgs["execution_start"]["timestamp"], msgs["execution_success"]["timestamp"]))
        async with http.post(comfy_url + "/history", json={"delete": ids}):
            pass
    return gaps_of(spans)


def line(name: str, gaps: list[float], total: float, job_ms: float, n: int) -> str:
    over = total / (n * job_ms) - 1
    return (f"  {name:<10} gap median {median(gaps):6.1f} ms  p95 {pct(gaps, 95):6.1f}  max {max(gaps):6.1f}  "
            f"total {total / 1000:6.2f} s = n x job {n * job_ms / 1000:6.2f} s {over:+.1%}")


async def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("-n", type=int, default=50, help="requests per round")
    parser.add_argument("--rounds", type=int, default=2, help="pipelined/serial alternations")
    parser.add_argument("--file-mb", type=float, default=3.0)
    parser.add_argument("--work", type=float, default=0.2, help="seconds the test node works")
    args = parser.parse_args()
    results: dict[str, list[tuple[list[float], float, float]]] = {"pipelined": [], "serial": [], "floor": []}
    async with comfyui(args) as (comfy_url, output_dir), seaweedfs() as s3:
        t = s3.target()
        s3_env = {"S3_ACCESS_KEY_ID": t.access_key_id, "S3_SECRET_ACCESS_KEY": t.secret_access_key,
                  "S3_BUCKET_NAME": t.bucket_name, "S3_ENDPOINT_URL": str(t.endpoint_url)}
        for _ in range(args.rounds):
            results["pipelined"].append(await through_worker(comfy_url, output_dir, s3_env, args.n, args.file_mb,
                                                             args.work, True))
            results["serial"].append(await through_worker(comfy_url, output_dir, s3_env, args.n, args.file_mb,
                                                          args.work, False))
            results["floor"].append(await comfy_floor(comfy_url, args.n, args.file_mb, args.work))
    print(f"GPU idle gap: {args.n} queued requests x {args.rounds} rounds, node works {args.work * 1000:.0f} ms and "
          f"writes {args.file_mb:g} MB x 1 + 4 small files, uploaded to S3")
    summary = {}
    for name, rounds in results.items():
        gaps = [g for r in rounds for g in r[0]]
        total = statistics.fmean(r[1] for r in rounds)
        job_ms = statistics.fmean(r[2] for r in rounds)
        summary[name] = (gaps, total, job_ms)
        print(line(name, gaps, total, job_ms, args.n))
    gaps, total, job_ms = summary["pipelined"]
    print(f"  pipelined: median {verdict(median(gaps) <= 2)} (<= 2 ms), p95 {verdict(pct(gaps, 95) <= 5)} (<= 5 ms), "
          f"total {verdict(total <= 1.03 * args.n * job_ms)} (within 3 %); serial / pipelined total "
          f"{summary['serial'][1] / total:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
