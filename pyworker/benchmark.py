"""The start-up benchmark: ComfyUI's default SD1.5 graph at BENCHMARK_TEST_WIDTH x HEIGHT x STEPS, one warm-up
and ``runs`` measured runs, each with a random prompt from misc/test_prompts.txt and a random seed.

Sampling speed comes from ComfyUI's ``progress`` events of the sampler node: the steps between its first and
second-to-last event over the time between them (not wall time over steps; ComfyUI often sends the very last
event late, see ``PromptState.node_rates``). Each run also gives its total seconds and
per-node times. The result is a per-node report (JSON) with a verdict against a reference table of expected
it/s per GPU model; ``max_perf`` (cost per second) is what the autoscaler is told.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import statistics
import time
from pathlib import Path
from typing import Any, Final, Literal

import aiofiles
import msgspec

from pyworker.comfy_ws import ComfyClient, Phase, ProgressCallback
from pyworker.embedded import MISC
from pyworker.errors import ComfyValidationError, WorkerError
from pyworker.modifiers import find_sampler, resolve_target

log = logging.getLogger(__name__)
_encoder: Final = msgspec.json.Encoder()


class BenchmarkConfig(msgspec.Struct, frozen=True, kw_only=True):
    width: int = 512
    height: int = 512
    steps: int = 20
    runs: int = 3
    workflow: Path = MISC / "workflows" / "sd15_default.json"
    checkpoint: str | None = None
    cost_per_job: float = 1.0
    tolerance: float = 0.20  # a run this much slower than the reference is flagged


class NodeTime(msgspec.Struct):
    node_id: str
    class_type: str
    ms: float


class Run(msgspec.Struct):
    prompt: str
    seed: int
    seconds: float  # ComfyUI's own start-to-end
    it_s: float
    nodes: list[NodeTime]


Verdict = Literal["ok", "slow", "unrated", "failed"]


class Report(msgspec.Struct, kw_only=True):
    gpu_name: str
    vram_total_bytes: int | None
    comfyui_version: str | None
    pytorch_version: str | None
    settings: dict[str, Any]
    checkpoint: str | None
    checkpoint_hash: str | None
    warmup: Run | None
    runs: list[Run]
    it_s: float  # mean of the runs
    it_s_spread_pct: float  # (max - min) / mean of the runs' it/s
    seconds_per_job: float
    max_perf: float  # cost per second
    expected_it_s: float | None
    verdict: Verdict
    message: str
    key: str  # the cache key: GPU, ComfyUI version, settings, checkpoint
    created_at: float
    cached: bool = False


class BenchmarkFailed(WorkerError):
    status = 503


def load_reference(path: Path) -> dict[str, float]:
    table = msgspec.json.decode(path.read_bytes(), type=dict[str, Any])
    return {str(k): float(v) for k, v in table.get("it_s", {}).items()}


def expected_rate(gpu_name: str, reference: dict[str, float]) -> float | None:
    matches = [k for k in reference if k.lower() in gpu_name.lower()]
    return reference[max(matches, key=len)] if matches else None


def _set_by_role(workflow: dict[str, Any], target: str, value: object) -> bool:
    found = resolve_target(workflow, target)
    if found is None:
        return False
    workflow[found[0]]["inputs"][found[1]] = value
    return True


def _set_everywhere(workflow: dict[str, Any], name: str, value: object) -> None:
    for node in workflow.values():
        if name in node.get("inputs", {}) and not isinstance(node["inputs"][name], list):
            node["inputs"][name] = value


def build_workflow(base: dict[str, Any], config: BenchmarkConfig, prompt: str, seed: int) -> dict[str, Any]:
    """The benchmark graph for one run: size, steps, prompt, seed and checkpoint set by their role in the graph
    (a graph without a sampler, such as a test node, gets ``steps``/``seed`` wherever it has them)."""
    wf: dict[str, Any] = msgspec.json.decode(_encoder.encode(base))
    _set_by_role(wf, "latent_image.width", config.width)
    _set_by_role(wf, "latent_image.height", config.height)
    _set_by_role(wf, "positive.text", prompt)
    if config.checkpoint:
        _set_by_role(wf, "model.ckpt_name", config.checkpoint)
    if not _set_by_role(wf, "sampler.steps", config.steps):
        _set_everywhere(wf, "steps", config.steps)
    if not _set_by_role(wf, "sampler.seed", seed):
        _set_everywhere(wf, "seed", seed)
    return wf


async def checkpoint_hash(path: Path) -> str | None:
    """sha256 of the checkpoint's first 64 MiB plus its size: identifies the file in seconds, not minutes."""
    try:
        size = (await asyncio.to_thread(path.stat)).st_size
        digest = hashlib.sha256(str(size).encode())
        async with aiofiles.open(path, "rb") as f:
            for _ in range(64):
                chunk = await f.read(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
        return digest.hexdigest()[:32]
    except OSError:
        return None


class Benchmark:
    def __init__(self, comfy: ComfyClient, config: BenchmarkConfig, *, reference: dict[str, float],
                 checkpoints_dir: Path | None, cache_path: Path | None, report_path: Path | None) -> None:
        self.comfy = comfy
        self.config = config
        self.reference = reference
        self.checkpoints_dir = checkpoints_dir
        self.cache_path = cache_path
        self.report_path = report_path
        self.prompts = [p for p in (MISC / "test_prompts.txt").read_text().splitlines() if p.strip()]

    async def run(self, on_progress: ProgressCallback | None = None) -> Report:
        stats = await self.comfy.api.system_stats()
        device = (stats.get("devices") or [{}])[0]
        system = stats.get("system", {})
        gpu = str(device.get("name", "unknown"))
        base = msgspec.json.decode(await asyncio.to_thread(self.config.workflow.read_bytes), type=dict[str, Any])
        ckpt = self.config.checkpoint or self._workflow_checkpoint(base)
        ckpt_hash = await checkpoint_hash(self.checkpoints_dir / ckpt) if self.checkpoints_dir and ckpt else None
        settings = {"width": self.config.width, "height": self.config.height, "steps": self.config.steps,
                    "runs": self.config.runs, "workflow": self.config.workflow.name}
        key = hashlib.sha256(_encoder.encode([gpu, system.get("comfyui_version"), settings, ckpt,
                                              ckpt_hash])).hexdigest()[:24]
        cached = await self._cached(key)
        if cached is not None:
            log.info("benchmark: reusing the cached result for this GPU, ComfyUI, settings and checkpoint (%s)", key)
            return cached
        sampler = find_sampler(base)
        warmup = await self._one(base, sampler, on_progress)
        runs = [await self._one(base, sampler, on_progress) for _ in range(self.config.runs)]
        rates = [r.it_s for r in runs]
        mean = statistics.fmean(rates)
        spj = statistics.fmean(r.seconds for r in runs)
        expected = expected_rate(gpu, self.reference)
        verdict: Verdict = "unrated"
        message = f"{mean:.2f} it/s on {gpu}; no reference figure for this GPU (misc/gpu_reference.json)"
        if expected is not None:
            slow = mean < expected * (1 - self.config.tolerance)
            verdict = "slow" if slow else "ok"
            message = (f"{mean:.2f} it/s on {gpu}, expected about {expected:.2f}: "
                       + (f"more than {self.config.tolerance:.0%} slower, UNDERPERFORMING" if slow else "as expected"))
        report = Report(
            gpu_name=gpu, vram_total_bytes=device.get("vram_total"), comfyui_version=system.get("comfyui_version"),
            pytorch_version=system.get("pytorch_version"), settings=settings, checkpoint=ckpt,
            checkpoint_hash=ckpt_hash, warmup=warmup, runs=runs, it_s=round(mean, 4),
            it_s_spread_pct=round((max(rates) - min(rates)) / mean * 100, 2) if mean else 0.0,
            seconds_per_job=round(spj, 4), max_perf=round(self.config.cost_per_job / spj, 6) if spj else 0.0,
            expected_it_s=expected, verdict=verdict, message=message, key=key, created_at=time.time(),
        )
        await self._store(report)
        return report

    @staticmethod
    def _workflow_checkpoint(base: dict[str, Any]) -> str | None:
        found = resolve_target(base, "model.ckpt_name")
        return str(base[found[0]]["inputs"][found[1]]) if found else None

    async def _one(self, base: dict[str, Any], sampler: str | None, on_progress: ProgressCallback | None) -> Run:
        prompt, seed = random.choice(self.prompts), random.randint(0, 2**32 - 1)
        wf = build_workflow(base, self.config, prompt, seed)
        try:
            result = await self.comfy.run(wf, on_progress=on_progress)
        except ComfyValidationError as exc:
            if "ckpt_name" in str(exc.node_errors):
                raise BenchmarkFailed(f"no SD1.5 checkpoint: ComfyUI has no {self.config.checkpoint or 'checkpoint'} "
                                      "named by the benchmark workflow") from None
            raise BenchmarkFailed(f"the benchmark workflow was refused: {exc.message}") from None
        if result.phase is not Phase.SUCCEEDED:
            f = result.failure
            raise BenchmarkFailed(f"the benchmark run failed: {f.exception_type}: {f.exception_message}" if f
                                  else "the benchmark run did not succeed")
        node = sampler if sampler in result.node_rates else next(iter(result.node_rates), None)
        if node is None:
            raise BenchmarkFailed("the benchmark workflow reported no sampling progress")
        seconds = (result.comfy_ms / 1000) if result.comfy_ms else result.execution_s
        return Run(prompt=prompt, seed=seed, seconds=round(seconds, 4), it_s=round(result.node_rates[node], 4),
                   nodes=[NodeTime(node_id=n.node_id, class_type=n.class_type, ms=round(n.ms, 1))
                          for n in result.nodes if not n.cached])

    async def _cached(self, key: str) -> Report | None:
        if self.cache_path is None:
            return None
        try:
            async with aiofiles.open(self.cache_path, "rb") as f:
                report = msgspec.json.decode(await f.read(), type=Report)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None
        if report.key != key:
            return None
        report.cached = True
        await self._write(self.report_path, report)
        return report

    async def _store(self, report: Report) -> None:
        await self._write(self.cache_path, report)
        await self._write(self.report_path, report)

    @staticmethod
    async def _write(path: Path | None, report: Report) -> None:
        if path is None:
            return
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        async with aiofiles.open(path, "wb") as f:
            await f.write(msgspec.json.format(_encoder.encode(report), indent=2))


def summary(report: Report) -> str:
    """The operator's readable summary."""
    lines = [f"benchmark: {report.message}",
             f"  {report.settings['width']}x{report.settings['height']}, {report.settings['steps']} steps, "
             f"{len(report.runs)} runs after a warm-up{' (cached)' if report.cached else ''}; "
             f"ComfyUI {report.comfyui_version}, checkpoint {report.checkpoint}",
             f"  it/s {report.it_s:.2f} (spread {report.it_s_spread_pct:.1f} %), {report.seconds_per_job:.2f} s per "
             f"job, max_perf {report.max_perf:.4f} cost/s, verdict {report.verdict}"]
    for i, run in enumerate(report.runs, 1):
        slowest = max(run.nodes, key=lambda n: n.ms, default=None)
        worst = f", slowest node {slowest.node_id} {slowest.class_type} {slowest.ms:.0f} ms" if slowest else ""
        lines.append(f"  run {i}: {run.it_s:.2f} it/s, {run.seconds:.2f} s{worst}")
    return "\n".join(lines)
