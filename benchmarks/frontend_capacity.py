"""5. Front-end capacity: how many requests a second the worker refuses with 429 under overload (the queue
is full behind a long job, so every new request is refused), against the same number of GET /health answers,
the cheapest route, side by side; and the cost of one RSA signature check, against one msgspec decode of the
same envelope."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import aiohttp
import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from benchmarks.harness import WorkerProcess, comfyui, common_args
from pyworker.autoscaler.auth import Verifier, parse_auth_data
from tests.conftest import steps_graph


async def hammer(http: aiohttp.ClientSession, method: str, url: str, body: Any, n: int,
                 conc: int) -> tuple[float, dict[int, int]]:
    codes: dict[int, int] = {}
    remaining = n

    async def loop() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with http.request(method, url, json=body) as resp:
                await resp.read()
                codes[resp.status] = codes.get(resp.status, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*[loop() for _ in range(conc)])
    return n / (time.perf_counter() - t0), codes


def signature_costs(n: int) -> tuple[float, float]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = Verifier(key.public_key(), replay_window=10 * n)
    envelopes = []
    for i in range(n):
        data: dict[str, Any] = {"cost": 1, "endpoint": "e", "reqnum": i, "request_idx": i, "url": "http://w:1"}
        msg = json.dumps({"url": data["url"]}, indent=4, sort_keys=True).encode()
        data["signature"] = base64.b64encode(key.sign(msg, padding.PKCS1v15(), hashes.SHA256())).decode()
        envelopes.append(json.dumps({"auth_data": data, "payload": {"input": {"workflow_json": {}}}}).encode())
    t0 = time.perf_counter()
    for env in envelopes:
        msgspec.json.decode(env)
    decode_us = (time.perf_counter() - t0) / n * 1e6
    auths = [parse_auth_data(msgspec.json.decode(e)["auth_data"]) for e in envelopes]
    t0 = time.perf_counter()
    for auth in auths:
        verifier.verify(auth)
    verify_us = (time.perf_counter() - t0) / n * 1e6
    return verify_us, decode_us


async def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("-n", type=int, default=3000, help="requests on each side")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with TemporaryDirectory() as tmp:
        bench_wf = Path(tmp) / "bench.json"
        bench_wf.write_text(json.dumps(steps_graph(10, 0.01, seed=0)))
        async with comfyui(args) as (comfy_url, output_dir), \
                WorkerProcess(comfy_url, output_dir, BENCHMARK="on", BENCHMARK_WORKFLOW=str(bench_wf),
                              BENCHMARK_RUNS="1", BENCHMARK_CACHE=str(Path(tmp) / "c.json"),
                              BENCHMARK_REPORT=str(Path(tmp) / "r.json"), MAX_QUEUE_TIME="0.05") as worker, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as http:
            long_job = asyncio.create_task(http.post(worker.url + "/generate/sync", json={
                "input": {"workflow_json": steps_graph(4000, 0.01)}}))
            await asyncio.sleep(0.5)  # admitted; the work ahead (one benchmark job) is over MAX_QUEUE_TIME
            body = {"input": {"workflow_json": steps_graph(1)}}
            rounds = []
            for _ in range(2):
                rounds.append(("429", *await hammer(http, "POST", worker.url + "/generate/sync", body, args.n,
                                                    args.concurrency)))
                rounds.append(("health", *await hammer(http, "GET", worker.url + "/health", None, args.n,
                                                       args.concurrency)))
            long_job.cancel()
    verify_us, decode_us = signature_costs(500)
    rej = [r for r in rounds if r[0] == "429"]
    hea = [r for r in rounds if r[0] == "health"]
    rej_rate = sum(r[1] for r in rej) / len(rej)
    health_rate = sum(r[1] for r in hea) / len(hea)
    print(f"front-end capacity: {args.n} requests x 2 rounds each, {args.concurrency} connections, one worker process")
    print(f"  refused with 429: {rej_rate:7.0f} /s  (codes {rej[-1][2]})")
    print(f"  GET /health:      {health_rate:7.0f} /s  (codes {hea[-1][2]}); 429 / health {rej_rate / health_rate:.2f}")
    print(f"  one RSA-2048 signature check {verify_us:.0f} us; one msgspec decode of the envelope {decode_us:.1f} us "
          f"(ratio {verify_us / decode_us:.0f})")


if __name__ == "__main__":
    asyncio.run(main())
