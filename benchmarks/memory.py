"""4. Memory: the idle RSS of `python -m pyworker serve` (the worker process, not ComfyUI), its growth over
many requests of a tiny workflow (measured from after a warm-up to the end), and ComfyUI's history, which must
not grow because of the worker. Target: idle <= 80 MB, growth over 10,000 requests < 5 MB."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from benchmarks.added_latency import tiny
from benchmarks.harness import WorkerProcess, comfyui, common_args, verdict


async def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("-n", type=int, default=10000, help="requests")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    async with comfyui(args) as (comfy_url, output_dir), aiohttp.ClientSession() as http:
        async with http.get(comfy_url + "/history") as resp:
            history_before = len(await resp.json())
        async with WorkerProcess(comfy_url, output_dir) as worker:
            await asyncio.sleep(1.0)
            idle = worker.rss_mb
            samples: list[tuple[int, float]] = []

            async def burst(count: int) -> None:
                remaining, done = count, 0

                async def loop() -> None:
                    nonlocal remaining, done
                    while remaining > 0:
                        remaining -= 1
                        await client_once(http, worker.url)
                        done += 1
                        if done % max(1, count // 20) == 0:
                            samples.append((done, worker.rss_mb))

                await asyncio.gather(*[loop() for _ in range(args.concurrency)])

            warm = max(1, min(1000, args.n // 10))
            await burst(warm)
            after_warmup = worker.rss_mb
            samples.clear()
            t0 = time.monotonic()
            await burst(args.n)
            wall = time.monotonic() - t0
            await asyncio.sleep(1.5)  # the history janitor's last batch
            end = worker.rss_mb
        async with http.get(comfy_url + "/history") as resp:
            history_after = len(await resp.json())
    growth = end - after_warmup
    print(f"memory: {warm} + {args.n} requests of a tiny workflow, {args.concurrency} at a time, "
          f"{args.n / wall:.0f} req/s")
    print(f"  worker RSS idle {idle:.1f} MB (target <= 80: {verdict(idle <= 80)}); after {warm} warm-up requests "
          f"{after_warmup:.1f} MB; at the end {end:.1f} MB")
    print(f"  growth from warm-up to the end: {growth:+.2f} MB (target < 5: {verdict(growth < 5)}); samples: "
          + " ".join(f"{n}:{mb:.1f}" for n, mb in samples[::4]))
    print(f"  ComfyUI history entries before {history_before}, after {history_after} "
          f"({verdict(history_after - history_before <= args.concurrency)}: the worker deletes its entries)")


async def client_once(http: aiohttp.ClientSession, url: str) -> None:
    async with http.post(url + "/generate/sync", json={"input": {"workflow_json": tiny()}}) as resp:
        await resp.read()
        assert resp.status == 200


if __name__ == "__main__":
    asyncio.run(main())
