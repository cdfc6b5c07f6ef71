"""The start-up benchmark: accuracy against a node of known step rate, screening, and the real SD1.5 graph
on the random-weight checkpoint (its images are noise)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyworker.benchmark import Benchmark, BenchmarkConfig, BenchmarkFailed, expected_rate, summary
from pyworker.comfy_ws import ComfyClient
from pyworker.embedded import MISC, EmbeddedComfyUI

RATE = 50.0  # steps per second of the test node


def steps_workflow(tmp_path: Path, rate: float) -> Path:
    path = tmp_path / f"steps_{rate}.json"
    path.write_text(json.dumps({"1": {"class_type": "PyworkerSteps",
                                      "inputs": {"steps": 20, "step_seconds": 1 / rate, "seed": 0}}}))
    return path


def bench(client: ComfyClient, workflow: Path, runs: int = 3, expected: float = RATE) -> Benchmark:
    config = BenchmarkConfig(workflow=workflow, steps=20, runs=runs)
    return Benchmark(client, config, reference={"cpu": expected}, checkpoints_dir=None, cache_path=None,
                     report_path=None)


async def test_measured_rate_is_within_2_percent(client: ComfyClient, tmp_path: Path) -> None:
    report = await bench(client, steps_workflow(tmp_path, RATE)).run()
    assert report.gpu_name == "cpu" and report.expected_it_s == RATE
    for run in report.runs:
        assert run.it_s == pytest.approx(RATE, rel=0.02)
    assert report.it_s == pytest.approx(RATE, rel=0.02)
    assert report.verdict == "ok" and report.it_s_spread_pct < 4
    assert report.max_perf == pytest.approx(1 / report.seconds_per_job, rel=1e-3)
    assert report.seconds_per_job == pytest.approx(19 / RATE, rel=0.3)  # 20 steps, the first one free


async def test_screening_20_trials_each(client: ComfyClient, tmp_path: Path) -> None:
    """Each trial is a whole benchmark (a warm-up and 3 runs of 20 steps); the reference says 100 it/s."""
    normal, slowed = steps_workflow(tmp_path, 100.0), steps_workflow(tmp_path, 75.0)  # 25 % slower
    verdicts: dict[str, list[str]] = {"normal": [], "slowed": []}
    for _ in range(20):
        verdicts["normal"].append((await bench(client, normal, expected=100.0).run()).verdict)
        verdicts["slowed"].append((await bench(client, slowed, expected=100.0).run()).verdict)
    assert verdicts["normal"].count("slow") == 0, verdicts
    assert verdicts["slowed"].count("slow") == 20, verdicts


def test_reference_table_matching() -> None:
    table = {"RTX 4090": 43.0, "RTX 4090 D": 38.0, "A100": 30.0}
    assert expected_rate("cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", table) == 43.0
    assert expected_rate("cuda:0 NVIDIA GeForce RTX 4090 D : native", table) == 38.0  # the longest key wins
    assert expected_rate("cpu", table) is None
    shipped = json.loads((MISC / "gpu_reference.json").read_text())["it_s"]
    assert shipped["RTX 4090"] == 43.0
    assert len((MISC / "test_prompts.txt").read_text().splitlines()) >= 30


async def test_sd15_default_graph_end_to_end_and_cache(client: ComfyClient, comfy: EmbeddedComfyUI,
                                                       demo_checkpoint: str, tmp_path: Path) -> None:
    """ComfyUI's default graph on the generated SD1.5 checkpoint (random weights: the images are noise)."""
    def make(steps: int) -> Benchmark:
        config = BenchmarkConfig(width=64, height=64, steps=steps, runs=2, checkpoint=demo_checkpoint)
        return Benchmark(client, config, reference={}, checkpoints_dir=comfy.checkpoints_dir,
                         cache_path=tmp_path / "cache.json", report_path=tmp_path / "report.json")

    report = await make(4).run()
    assert not report.cached and report.verdict == "unrated" and report.checkpoint == demo_checkpoint
    assert report.checkpoint_hash and report.comfyui_version and report.it_s > 0
    assert len(report.runs) == 2 and report.warmup is not None
    for run in report.runs:
        assert {n.class_type for n in run.nodes} >= {"KSampler", "VAEDecode"}
        assert run.prompt in (MISC / "test_prompts.txt").read_text()
    assert report.runs[0].seed != report.runs[1].seed
    assert json.loads((tmp_path / "report.json").read_text())["key"] == report.key
    assert "it/s" in summary(report) and "run 2" in summary(report)
    again = await make(4).run()
    assert again.cached and again.key == report.key and again.it_s == report.it_s
    changed = await make(3).run()  # other settings: measured anew
    assert not changed.cached and changed.key != report.key


async def test_no_checkpoint_is_an_error(client: ComfyClient) -> None:
    config = BenchmarkConfig(width=64, height=64, steps=2, runs=1, checkpoint="v1-5-pruned-emaonly.safetensors")
    with pytest.raises(BenchmarkFailed) as info:
        await Benchmark(client, config, reference={}, checkpoints_dir=None, cache_path=None,
                        report_path=None).run()
    assert "no SD1.5 checkpoint" in info.value.message
