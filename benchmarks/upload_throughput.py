"""3. Upload throughput: eight 16 MiB outputs and one 512 MiB output through the worker's S3 path
(pyworker.s3.S3Uploader: streamed from disk, multipart above 16 MiB), against raw aiobotocore (put_object for
the small files, a plain sequential multipart for the big one) to the same SeaweedFS, alternating W R W R.
Each side runs in a child process of its own, which reports its peak RSS before and after the 512 MiB upload.
Target: worker / raw throughput >= 0.90; the worker's peak RSS grows by less than 64 MB during the big upload."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, seaweedfs, verdict

MiB = 1024 * 1024


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def child(side: str, conf: dict[str, Any]) -> None:
    """Runs in the child process: uploads the files, prints one JSON line of figures."""
    from aiobotocore.session import get_session

    from pyworker.s3 import S3Uploader, client_config
    from pyworker.settings import S3Target

    target = S3Target(**conf["target"])
    small, big = [Path(p) for p in conf["small"]], Path(conf["big"])
    prefix = f"{side}-{time.time_ns()}"
    if side == "worker":
        async with S3Uploader(default=target) as up, up.client_for(target) as client:
            await up.upload(client, target, small[0], f"{prefix}/warm", "application/octet-stream")
            t0 = time.perf_counter()
            for i, p in enumerate(small):
                await up.upload(client, target, p, f"{prefix}/s{i}", "application/octet-stream")
            t_small = time.perf_counter() - t0
            before = peak_mb()
            t0 = time.perf_counter()
            await up.upload(client, target, big, f"{prefix}/big", "application/octet-stream")
            t_big = time.perf_counter() - t0
    else:
        session = get_session()
        async with session.create_client("s3", region_name=target.region, endpoint_url=target.endpoint_url,
                                         aws_access_key_id=target.access_key_id,
                                         aws_secret_access_key=target.secret_access_key,
                                         config=client_config()) as client:
            await client.put_object(Bucket=target.bucket_name, Key=f"{prefix}/warm", Body=small[0].read_bytes())
            t0 = time.perf_counter()
            for i, p in enumerate(small):
                await client.put_object(Bucket=target.bucket_name, Key=f"{prefix}/s{i}", Body=p.read_bytes())
            t_small = time.perf_counter() - t0
            before = peak_mb()
            t0 = time.perf_counter()
            key = f"{prefix}/big"
            upload_id = (await client.create_multipart_upload(Bucket=target.bucket_name, Key=key))["UploadId"]
            parts = []
            with big.open("rb") as f:
                number = 1
                while chunk := f.read(8 * MiB):
                    answer = await client.upload_part(Bucket=target.bucket_name, Key=key, UploadId=upload_id,
                                                      PartNumber=number, Body=chunk)
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                    number += 1
            await client.complete_multipart_upload(Bucket=target.bucket_name, Key=key, UploadId=upload_id,
                                                   MultipartUpload={"Parts": parts})
            t_big = time.perf_counter() - t0
    print(json.dumps({"t_small": t_small, "t_big": t_big, "peak_before": before, "peak_after": peak_mb()}))


async def run_side(side: str, conf: dict[str, Any]) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.upload_throughput", "--child", side, json.dumps(conf), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"{side} child failed"
    figures: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return figures


async def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small-mb", type=int, default=16)
    parser.add_argument("--small-count", type=int, default=8)
    parser.add_argument("--big-mb", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyworker-upload-") as tmp:
        small = []
        for i in range(args.small_count):
            path = Path(tmp) / f"small{i}.bin"
            path.write_bytes(os.urandom(args.small_mb * MiB))
            small.append(str(path))
        big = Path(tmp) / "big.bin"
        with big.open("wb") as f:
            for _ in range(args.big_mb):
                f.write(os.urandom(MiB))
        async with seaweedfs() as s3:
            t = s3.target()
            conf = {"target": {"access_key_id": t.access_key_id, "secret_access_key": t.secret_access_key,
                               "bucket_name": t.bucket_name, "endpoint_url": t.endpoint_url, "region": t.region},
                    "small": small, "big": str(big)}
            results: dict[str, list[dict[str, float]]] = {"worker": [], "raw": []}
            for _ in range(args.rounds):
                for side in ("worker", "raw"):
                    results[side].append(await run_side(side, conf))
    small_bytes, big_bytes = args.small_count * args.small_mb * MiB, args.big_mb * MiB
    print(f"upload throughput: {args.small_count} x {args.small_mb} MiB and 1 x {args.big_mb} MiB to SeaweedFS, "
          f"{args.rounds} rounds alternating")
    rates = {}
    for side, rounds in results.items():
        small_rate = sum(small_bytes / r["t_small"] for r in rounds) / len(rounds) / MiB
        big_rate = sum(big_bytes / r["t_big"] for r in rounds) / len(rounds) / MiB
        growth = max(r["peak_after"] - r["peak_before"] for r in rounds)
        rates[side] = (small_rate, big_rate, growth)
        print(f"  {side:<6} small files {small_rate:7.1f} MiB/s   big file {big_rate:7.1f} MiB/s   "
              f"peak RSS growth during the big upload {growth:6.1f} MB")
    r_small, r_big = rates["worker"][0] / rates["raw"][0], rates["worker"][1] / rates["raw"][1]
    ok = verdict(min(r_small, r_big) >= 0.9)
    print(f"  worker / raw: small {r_small:.3f}, big {r_big:.3f} (target >= 0.90: {ok});"
          f" worker RSS growth {rates['worker'][2]:.1f} MB (target < 64: {verdict(rates['worker'][2] < 64)})")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        asyncio.run(child(sys.argv[2], json.loads(sys.argv[3])))
    else:
        asyncio.run(main())
