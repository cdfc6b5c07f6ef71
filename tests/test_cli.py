"""``python -m pyworker run-workflow`` against the session's real ComfyUI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import aiohttp

from pyworker.embedded import EmbeddedComfyUI, free_port

ROOT = Path(__file__).resolve().parent.parent


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyworker", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_run_workflow_prints_progress_and_outputs(comfy: EmbeddedComfyUI, demo_checkpoint: str,
                                                        tmp_path: Path) -> None:
    wf = json.loads((ROOT / "misc" / "workflows" / "sd15_default.json").read_text())
    wf["4"]["inputs"]["ckpt_name"] = demo_checkpoint
    wf["3"]["inputs"]["seed"] = uuid.uuid4().int % 2**32
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(wf))
    code, out, err = await _cli("run-workflow", str(path), "--comfy-url", comfy.url,
                                "--width", "64", "--height", "64", "--steps", "3")
    assert code == 0, err
    assert "node 3 KSampler  step 3/3" in out
    assert "succeeded" in out
    assert "output images (node 9): " in out  # a remote ComfyUI: the name and folder, not a local path


async def test_run_workflow_failure_exit_code_and_bad_file(comfy: EmbeddedComfyUI, tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"1": {"class_type": "PyworkerRaise", "inputs": {"message": "nope", "seed": 5}}}))
    code, out, _ = await _cli("run-workflow", str(path), "--comfy-url", comfy.url)
    assert code == 1
    assert "failed at node 1 (PyworkerRaise): ValueError: nope" in out
    path.write_text("{not json")
    code, _, err = await _cli("run-workflow", str(path), "--comfy-url", comfy.url)
    assert code == 2 and "cannot read an API-format workflow" in err


async def test_serve_answers_and_logs_json_lines(comfy: EmbeddedComfyUI, demo_checkpoint: str) -> None:
    port = free_port()
    env = {**os.environ, "COMFYUI_OUTPUT_DIR": str(comfy.output_dir), "DEFAULT_CHECKPOINT": demo_checkpoint,
           "LOG_FORMAT": "json", "WORKER_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyworker", "serve", "--host", "127.0.0.1", "--comfy-url", comfy.url, cwd=ROOT,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                        if resp.status == 200 and (await resp.json())["comfyui_connected"]:
                            break
                await asyncio.sleep(0.1)
            body = {"input": {"modifier": "Text2Image", "modifications": {"prompt": "a cat sitting on a windowsill",
                                                                          "width": 64, "height": 64, "steps": 2}}}
            async with http.post(f"http://127.0.0.1:{port}/generate/sync", json=body) as resp:
                assert resp.status == 200
                answer = await resp.json()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await proc.communicate()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    states = [entry["state"] for entry in lines if entry.get("request_id") == answer["id"]]
    assert states[0] == "accepted" and states[-1] == "answered"


async def test_serve_refuses_a_bad_setting() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyworker", "serve", cwd=ROOT, env={**os.environ, "WEBHOOK_TIMEOUT": "never"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "WEBHOOK_TIMEOUT" in err.decode() and "Traceback" not in err.decode()
