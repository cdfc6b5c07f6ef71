"""The ComfyUI driver against a real ComfyUI 0.3.75 on the CPU."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pyworker.comfy_ws import ComfyClient, Output, Phase, Update
from pyworker.embedded import EmbeddedComfyUI, free_port
from pyworker.errors import ComfyProtocolError, ComfyUnreachable, ComfyValidationError
from tests.conftest import make_base, outputs_graph, steps_graph
from tests.doubles import TcpProxy

ROOT = Path(__file__).resolve().parent.parent


async def test_model_free_graph(client: ComfyClient) -> None:
    color = uuid.uuid4().int % 0xFFFFFF  # unique: not served from ComfyUI's cache
    wf = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": color}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "pw_free"}}}
    result = await client.run(wf)
    assert result.phase is Phase.SUCCEEDED
    assert [n.node_id for n in result.nodes] == ["1", "2"]
    (out,) = result.outputs
    path = client.local_path(out)
    assert path.is_file() and path.read_bytes().startswith(b"\x89PNG")
    assert result.execution_s > 0 and result.comfy_ms is not None


async def test_sd15_default_graph_one_progress_event_per_step(client: ComfyClient, demo_checkpoint: str) -> None:
    """ComfyUI's default text-to-image graph on the random-weight checkpoint (the image is noise)."""
    wf = json.loads((ROOT / "misc" / "workflows" / "sd15_default.json").read_text())
    wf["4"]["inputs"]["ckpt_name"] = demo_checkpoint
    wf["5"]["inputs"].update(width=64, height=64)
    wf["3"]["inputs"].update(steps=7, seed=uuid.uuid4().int % 2**32)
    updates: list[Update] = []
    result = await client.run(wf, on_progress=updates.append)
    assert result.phase is Phase.SUCCEEDED, result.failure
    sampler = [(u.value, u.max) for u in updates if u.node == "3" and u.value is not None]
    assert sampler == [(i, 7) for i in range(1, 8)]
    assert all(u.class_type == "KSampler" for u in updates if u.node == "3")
    assert result.node_rates["3"] > 0
    assert {n.class_type for n in result.nodes} >= {"KSampler", "VAEDecode", "SaveImage"}
    (image,) = result.outputs
    assert client.local_path(image).read_bytes()[:4] == b"\x89PNG"


def _sd15(ckpt: str) -> dict[str, Any]:
    wf: dict[str, Any] = json.loads((ROOT / "misc" / "workflows" / "sd15_default.json").read_text())
    wf["4"]["inputs"]["ckpt_name"] = ckpt
    return wf


VALIDATION_CASES: list[tuple[str, Any, str, str | None]] = [
    # (case, workflow or a function of the checkpoint name, top-level error type, a node error type)
    ("required_input_missing", {"1": {"class_type": "PyworkerSteps", "inputs": {"step_seconds": 0.0, "seed": 1}}},
     "prompt_outputs_failed_validation", "required_input_missing"),
    ("value_smaller_than_min", steps_graph(steps=0), "prompt_outputs_failed_validation", "value_smaller_than_min"),
    ("invalid_input_type", {"1": {"class_type": "PyworkerSteps",
                                  "inputs": {"steps": "many", "step_seconds": 0.0, "seed": 1}}},
     "prompt_outputs_failed_validation", "invalid_input_type"),
    ("value_not_in_list", lambda ck: {**_sd15(ck), "4": {"class_type": "CheckpointLoaderSimple",
                                                         "inputs": {"ckpt_name": "no-such-model.safetensors"}}},
     "prompt_outputs_failed_validation", "value_not_in_list"),
    ("return_type_mismatch", lambda ck: {**_sd15(ck), "9": {"class_type": "SaveImage",
                                                            "inputs": {"images": ["4", 0], "filename_prefix": "x"}}},
     "prompt_outputs_failed_validation", "return_type_mismatch"),
    ("exception_during_validation", {"2": {"class_type": "SaveImage",
                                           "inputs": {"images": ["404", 0], "filename_prefix": "x"}}},
     "prompt_outputs_failed_validation", "exception_during_validation"),
    ("custom_validation_failed", {"1": {"class_type": "LoadImage", "inputs": {"image": "missing.png"}},
                                  "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                                              "filename_prefix": "x"}}},
     "prompt_outputs_failed_validation", "custom_validation_failed"),
    ("invalid_prompt", {"1": {"class_type": "NoSuchNode", "inputs": {}}}, "invalid_prompt", None),
    ("prompt_no_outputs", {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                                        "color": 0}}},
     "prompt_no_outputs", None),
]


@pytest.mark.parametrize(("case", "workflow", "error_type", "node_error_type"), VALIDATION_CASES,
                         ids=[c[0] for c in VALIDATION_CASES])
async def test_validation_errors(client: ComfyClient, demo_checkpoint: str, case: str, workflow: Any,
                                 error_type: str, node_error_type: str | None) -> None:
    wf = workflow(demo_checkpoint) if callable(workflow) else workflow
    with pytest.raises(ComfyValidationError) as info:
        await client.run(wf)
    err = info.value
    assert isinstance(err.error, dict) and err.error["type"] == error_type
    assert err.status == 400 and err.body()["node_errors"] == err.node_errors
    if node_error_type is None:
        assert not err.node_errors
    else:
        types = {e["type"] for node in err.node_errors.values() for e in node["errors"]}
        assert node_error_type in types, err.node_errors
        assert any(f"node {nid}" in err.message for nid in err.node_errors)  # one readable line per node
    assert "Traceback" not in err.message


async def test_accepted_prompt_with_dropped_branch_reports_warnings(client: ComfyClient) -> None:
    wf = {**steps_graph(2), "9": {"class_type": "PyworkerSteps", "inputs": {"steps": 0, "step_seconds": 0.0,
                                                                             "seed": 1}}}
    result = await client.run(wf)
    assert result.phase is Phase.SUCCEEDED
    assert list(result.warnings) == ["9"]


async def test_runtime_error(client: ComfyClient) -> None:
    result = await client.run({"1": {"class_type": "PyworkerRaise", "inputs": {"message": "bad input",
                                                                               "seed": uuid.uuid4().int % 2**62}}})
    assert result.phase is Phase.FAILED
    assert result.failure is not None
    assert (result.failure.node_id, result.failure.node_type) == ("1", "PyworkerRaise")
    assert (result.failure.exception_type, result.failure.exception_message) == ("ValueError", "bad input")


async def test_outputs_of_every_kind(client: ComfyClient, tmp_path: Path) -> None:
    result = await client.run(outputs_graph(file_mb=0.5))
    kinds = {o.output_type: o for o in result.outputs}
    assert sorted(kinds) == ["audio", "files", "gifs", "images", "text"]
    assert kinds["images"].subfolder == "pyworker_test"
    local = client.local_path(kinds["files"])
    assert local.stat().st_size == 512 * 1024
    # The same file through /view, as for a ComfyUI on another machine:
    remote = ComfyClient(client.url)
    async with remote:
        copy = await remote.fetch_output(kinds["images"], tmp_path)
        assert copy.read_bytes() == client.local_path(kinds["images"]).read_bytes()
        assert copy.is_relative_to(tmp_path)


def test_local_path_never_leaves_the_output_folder(tmp_path: Path) -> None:
    c = ComfyClient("http://127.0.0.1:9", output_dir=tmp_path)
    with pytest.raises(ComfyProtocolError):
        c.local_path(Output(node_id="1", output_type="images", filename="../../etc/passwd"))
    with pytest.raises(ComfyProtocolError):
        c.local_path(Output(node_id="1", output_type="images", filename="x.png", subfolder="/etc"))
    assert c.local_path(Output(node_id="1", output_type="images", filename="a.png", subfolder="s")) == \
        (tmp_path / "s" / "a.png").resolve()


async def test_cached_resubmission(client: ComfyClient) -> None:
    wf = outputs_graph()
    first = await client.run(wf)
    again = await client.run(wf)
    assert again.phase is Phase.SUCCEEDED
    assert again.cached == ["1"] and not first.cached
    assert [o.filename for o in again.outputs] == [o.filename for o in first.outputs]  # no new files


async def _wait_for(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_cancel_interrupts_the_running_prompt(client: ComfyClient) -> None:
    updates: list[Update] = []
    job = asyncio.create_task(client.run(steps_graph(2000, 0.01), on_progress=updates.append))
    await _wait_for(lambda: any(u.value for u in updates))
    pid = updates[0].prompt_id
    started = time.monotonic()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    entry = await client.api.history_when_written(pid)
    assert entry is not None and entry.status is not None
    assert "execution_interrupted" in [m[0] for m in entry.status.messages]
    assert time.monotonic() - started < 5  # 2,000 steps would take 20 s
    assert (await client.run(steps_graph(2))).phase is Phase.SUCCEEDED  # ComfyUI goes on


async def test_cancel_removes_a_queued_prompt(client: ComfyClient) -> None:
    first_updates: list[Update] = []
    first = asyncio.create_task(client.run(steps_graph(100, 0.01), on_progress=first_updates.append))
    await _wait_for(lambda: any(u.value for u in first_updates))
    queued_id = str(uuid.uuid4())
    queued = asyncio.create_task(client.run(steps_graph(3), prompt_id=queued_id))
    deadline = time.monotonic() + 5
    while queued_id not in (await client.api.queue()).pending_ids():
        assert time.monotonic() < deadline, "the second prompt never reached ComfyUI's queue"
        await asyncio.sleep(0.01)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert queued_id not in (await client.api.queue()).pending_ids()
    assert (await first).phase is Phase.SUCCEEDED
    assert await client.api.history(queued_id) is None  # it never ran


async def test_silence_is_not_failure(client: ComfyClient) -> None:
    """One step longer than ``gone_after``: no event for seconds, but ComfyUI is alive."""
    result = await client.run(steps_graph(1, client.gone_after + 1.0))
    assert result.phase is Phase.SUCCEEDED


async def test_websocket_cut_mid_job_still_completes_with_outputs(comfy: EmbeddedComfyUI) -> None:
    async with TcpProxy(comfy.port) as cutter, ComfyClient(cutter.url, output_dir=comfy.output_dir) as c:
        await c.wait_connected(5)
        seed = uuid.uuid4().int % 2**62
        wf = {"1": {"class_type": "PyworkerSteps", "inputs": {"steps": 60, "step_seconds": 0.02, "seed": seed}},
              "2": {"class_type": "PyworkerOutputs", "inputs": {"seed": seed, "file_mb": 0.01, "work_seconds": 0.3,
                                                                 "after": ["1", 0]}}}
        updates: list[Update] = []
        job = asyncio.create_task(c.run(wf, on_progress=updates.append))
        await _wait_for(lambda: any((u.value or 0) >= 10 for u in updates))
        await cutter.cut()  # the events of the rest of the run (and the outputs) are lost with the socket
        result = await job
        assert cutter.cuts == 1 and c.connected
        assert result.phase is Phase.SUCCEEDED
        assert sorted(o.output_type for o in result.outputs) == ["audio", "files", "gifs", "images", "text", "text"]
        for out in result.outputs:
            if out.filename:
                assert c.local_path(out).is_file()


async def test_comfyui_killed_mid_job_then_restarted(tmp_path: Path) -> None:
    proc = EmbeddedComfyUI(base=make_base(tmp_path / "base"), port=free_port())
    await proc.start()
    try:
        async with ComfyClient(proc.url, output_dir=proc.output_dir) as c:
            await c.wait_connected(5)
            updates: list[Update] = []
            job = asyncio.create_task(c.run(steps_graph(1000, 0.01), on_progress=updates.append))
            await _wait_for(lambda: any(u.value for u in updates))
            await proc.kill()
            killed = time.monotonic()
            with pytest.raises(ComfyUnreachable) as info:
                await job
            assert time.monotonic() - killed < 5
            assert "ComfyUI" in info.value.message
            with pytest.raises(ComfyUnreachable):  # a new job fails fast while it is down
                await c.run(steps_graph(1))
            await proc.start()
            result = await c.run(steps_graph(2))  # the same client reconnects by itself
            assert result.phase is Phase.SUCCEEDED
    finally:
        await proc.stop()


async def test_unreachable_comfyui_fails_fast() -> None:
    started = time.monotonic()
    async with ComfyClient(f"http://127.0.0.1:{free_port()}", gone_after=2.0) as c:
        with pytest.raises(ComfyUnreachable):
            await c.run(steps_graph(1))
    assert time.monotonic() - started < 5


async def test_other_endpoints(client: ComfyClient, tmp_path: Path) -> None:
    stats = await client.api.system_stats()
    assert "system" in stats and "devices" in stats
    info = await client.api.object_info()
    assert {"KSampler", "PyworkerSteps", "SaveImage"} <= set(info)
    uploaded = await client.api.upload_image("pw_upload.png", b"\x89PNG\r\n\x1a\nnot-really")
    assert uploaded.name == "pw_upload.png" and uploaded.type == "input"
    await client.api.free()
    result = await client.run(steps_graph(1))
    await client.api.delete_history([result.prompt_id])
    assert await client.api.history(result.prompt_id) is None


async def test_events_lost_without_a_socket_drop_are_recovered(comfy: EmbeddedComfyUI,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """TEST DOUBLE: every websocket frame is dropped on arrival (as if lost) while the socket stays up; the
    silent prompt is settled from /queue and /history."""
    async with ComfyClient(comfy.url, output_dir=comfy.output_dir, check_silent_after=1.0) as c:
        await c.wait_connected(5)
        monkeypatch.setattr(c, "_dispatch", lambda frame: None)
        result = await asyncio.wait_for(c.run(outputs_graph()), 15)
    assert result.phase is Phase.SUCCEEDED
    assert sorted(o.output_type for o in result.outputs) == ["audio", "files", "gifs", "images", "text"]
