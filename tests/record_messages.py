"""Record ComfyUI's websocket messages for the protocol-core tests (tests/data/*.jsonl).

Run by hand against a fresh embedded ComfyUI (it starts one):  .venv/bin/python tests/record_messages.py
Each line of a recording is one text frame exactly as ComfyUI sent it; binary frames are noted as
{"binary": <type>, "bytes": <length>}.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pyworker.embedded import DEFAULT_HOME, EmbeddedComfyUI, ensure_demo_checkpoint

HERE = Path(__file__).resolve().parent


def steps(n: int, seconds: float, seed: int) -> dict[str, Any]:
    return {"1": {"class_type": "PyworkerSteps", "inputs": {"steps": n, "step_seconds": seconds, "seed": seed}}}


async def record(url: str, name: str, workflow: dict[str, Any], interrupt_after: float | None = None) -> None:
    client_id = uuid.uuid4().hex
    prompt_id = str(uuid.uuid4())
    frames: list[str] = []
    async with connect(url.replace("http", "ws") + f"/ws?clientId={client_id}", max_size=None) as ws, \
            aiohttp.ClientSession() as http:
        async with http.post(url + "/prompt", json={"prompt": workflow, "client_id": client_id,
                                                    "prompt_id": prompt_id}) as resp:
            assert resp.status == 200, await resp.text()
        if interrupt_after is not None:
            await asyncio.sleep(interrupt_after)
            async with http.post(url + "/interrupt", json={"prompt_id": prompt_id}) as resp:
                assert resp.status == 200
        async for frame in ws:
            if isinstance(frame, bytes):
                frames.append(json.dumps({"binary": int.from_bytes(frame[:4], "big"), "bytes": len(frame)}))
                continue
            frames.append(frame)
            msg = json.loads(frame)
            if msg["type"] == "executing" and msg["data"].get("node") is None \
                    and msg["data"].get("prompt_id") == prompt_id:
                break
        async with http.get(url + f"/history/{prompt_id}") as resp:
            history = await resp.json()
    (HERE / "data" / f"{name}.jsonl").write_text("\n".join(frames) + "\n")
    (HERE / "data" / f"{name}.history.json").write_text(json.dumps(history[prompt_id], indent=1) + "\n")
    print(f"{name}: {len(frames)} frames")


async def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="pyworker-record-"))
    (base / "custom_nodes").mkdir(parents=True)
    shutil.copy(HERE / "comfy_nodes" / "pyworker_test_nodes.py", base / "custom_nodes")
    ckpt_dir = DEFAULT_HOME / "base" / "models" / "checkpoints"
    ckpt = await ensure_demo_checkpoint(DEFAULT_HOME, ckpt_dir)
    (base / "models").mkdir()
    (base / "models" / "checkpoints").symlink_to(ckpt_dir)
    sd15 = json.loads((HERE.parent / "misc" / "workflows" / "sd15_default.json").read_text())
    sd15["4"]["inputs"]["ckpt_name"] = ckpt
    sd15["5"]["inputs"].update(width=64, height=64)
    sd15["3"]["inputs"]["steps"] = 5
    try:
        async with EmbeddedComfyUI(base=base) as comfy:
            await record(comfy.url, "steps_success", steps(5, 0.01, 1))
            await record(comfy.url, "steps_cached", steps(5, 0.01, 1))
            await record(comfy.url, "raise_error",
                         {"1": {"class_type": "PyworkerRaise", "inputs": {"message": "boom", "seed": 1}}})
            await record(comfy.url, "steps_interrupted", steps(100, 0.05, 2), interrupt_after=0.5)
            await record(comfy.url, "outputs_all_kinds",
                         {"1": {"class_type": "PyworkerOutputs", "inputs": {"seed": 3, "file_mb": 0.01,
                                                                            "work_seconds": 0.0}}})
            await record(comfy.url, "sd15_default", sd15)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
