"""Each benchmark of benchmarks/ runs (tiny sizes, the session's ComfyUI). No timing is asserted here: the
figures are measured side by side by `make bench` and recorded in benchmarks/README.md."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from pyworker.embedded import EmbeddedComfyUI

ROOT = Path(__file__).resolve().parent.parent

CASES = [
    ("added_latency", ["-n", "3"], "worker - direct"),
    ("gpu_idle_gap", ["-n", "3", "--rounds", "1", "--file-mb", "0.1", "--work", "0.05"], "serial / pipelined"),
    ("upload_throughput", ["--small-mb", "1", "--small-count", "2", "--big-mb", "40", "--rounds", "1"],
     "worker / raw"),
    ("memory", ["-n", "20"], "ComfyUI history entries"),
    ("frontend_capacity", ["-n", "40", "--concurrency", "4"], "signature check"),
]


@pytest.mark.parametrize(("module", "args", "expect"), CASES, ids=[c[0] for c in CASES])
async def test_benchmark_runs(comfy: EmbeddedComfyUI, module: str, args: list[str], expect: str) -> None:
    comfy_args = [] if module == "upload_throughput" else ["--comfy-url", comfy.url,
                                                            "--comfy-output-dir", str(comfy.output_dir)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"benchmarks.{module}", *args, *comfy_args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert expect in out.decode()
