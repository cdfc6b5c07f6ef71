"""``python -m pyworker run-workflow`` against the session's real ComfyUI."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

from pyworker.embedded import EmbeddedComfyUI

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
