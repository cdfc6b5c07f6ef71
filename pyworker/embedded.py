"""The embedded ComfyUI: a child process started from the project's own install (misc/comfyui/setup.sh).

Used when no ComfyUI address is configured (``make run``) and by the tests. It runs on the CPU when the
machine has no NVIDIA GPU. It knows only paths and the process; talking to ComfyUI is comfy_ws's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp

from pyworker.errors import ComfyUnreachable

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MISC = PROJECT_ROOT / "misc"
DEFAULT_HOME = PROJECT_ROOT / ".comfyui"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def has_nvidia_gpu() -> bool:
    return Path("/dev/nvidiactl").exists()


def comfy_env(home: Path) -> dict[str, str]:
    """The environment of a process in ComfyUI's venv: ours, less credentials, plus the torchvision stub on a
    CPU install (PyPI's torchvision can't sit beside the local torch wheel; ComfyUI only needs the import)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_", "WEBHOOK_", "MASTER_"))}
    if not list((home / "venv" / "lib").glob("python3*/site-packages/torchvision")):
        stub = str(MISC / "comfyui" / "torchvision_stub")
        env["PYTHONPATH"] = stub + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class EmbeddedComfyUI:
    """One ComfyUI process. ``home`` is the folder misc/comfyui/setup.sh installed into; ``base`` is the
    ``--base-directory`` (models, custom_nodes, input, output, user)."""

    def __init__(
        self,
        home: Path = DEFAULT_HOME,
        base: Path | None = None,
        port: int | None = None,
        extra_args: list[str] | None = None,
        cpu: bool | None = None,
    ) -> None:
        self.home = home
        self.base = base or home / "base"
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.cpu = (not has_nvidia_gpu()) if cpu is None else cpu
        self.process: asyncio.subprocess.Process | None = None
        self.log_path = self.base / "logs" / f"comfyui-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def checkpoints_dir(self) -> Path:
        return self.base / "models" / "checkpoints"

    @property
    def python(self) -> Path:
        return self.home / "venv" / "bin" / "python"

    def _check_installed(self) -> None:
        if not (self.home / "ComfyUI" / "main.py").is_file() or not self.python.exists():
            raise ComfyUnreachable(
                f"no embedded ComfyUI in {self.home}: run `make setup` (or misc/comfyui/setup.sh) first"
            )

    async def start(self, timeout: float = 180.0) -> None:
        """Start ComfyUI and return once GET /system_stats answers 200."""
        self._check_installed()
        for sub in ("custom_nodes", "models/checkpoints", "input", "output", "temp", "user", "logs"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        args = [
            str(self.home / "ComfyUI" / "main.py"),
            "--listen", "127.0.0.1",
            "--port", str(self.port),
            "--base-directory", str(self.base),
            "--database-url", f"sqlite:///{self.base / 'user' / 'comfyui.db'}",
            "--disable-auto-launch",
            *(["--cpu"] if self.cpu else []),
            *self.extra_args,
        ]
        started = time.monotonic()
        with self.log_path.open("ab") as logfile:
            self.process = await asyncio.create_subprocess_exec(
                str(self.python), *args, stdin=asyncio.subprocess.DEVNULL, stdout=logfile,
                stderr=asyncio.subprocess.STDOUT, env=comfy_env(self.home), cwd=str(self.home / "ComfyUI"),
                start_new_session=True,
            )
        log.info("ComfyUI starting on %s (%s), log %s", self.url, "CPU" if self.cpu else "GPU", self.log_path)
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - started < timeout:
                if self.process.returncode is not None:
                    raise ComfyUnreachable(
                        f"ComfyUI exited with {self.process.returncode} during start-up; last log lines:\n"
                        + self.log_tail()
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(self.url + "/system_stats") as resp:
                        if resp.status == 200:
                            log.info("ComfyUI ready on %s after %.1f s", self.url, time.monotonic() - started)
                            return
                await asyncio.sleep(0.1)
        await self.stop()
        raise ComfyUnreachable(f"ComfyUI did not answer within {timeout:.0f} s; log {self.log_path}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, grace: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def kill(self) -> None:
        """SIGKILL, as a crash would: the process stays visible as exited (for tests of recovery)."""
        proc = self.process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def __aenter__(self) -> EmbeddedComfyUI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def ensure_demo_checkpoint(comfy_home: Path, checkpoints_dir: Path, seed: int = 0) -> str:
    """Generate the random-weight SD1.5-layout checkpoint (cached; its outputs are noise). Returns its name."""
    script = MISC / "comfyui" / "make_checkpoint.py"
    proc = await asyncio.create_subprocess_exec(
        str(comfy_home / "venv" / "bin" / "python"), str(script), "--comfyui", str(comfy_home / "ComfyUI"),
        "--out-dir", str(checkpoints_dir), "--seed", str(seed),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=comfy_env(comfy_home),
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"generating the demo checkpoint failed:\n{err.decode(errors='replace')[-2000:]}")
    return out.decode().strip().splitlines()[-1]


SD15_DEFAULT_NAME = "v1-5-pruned-emaonly.safetensors"  # the checkpoint ComfyUI's default graph names


async def default_checkpoint(configured: str | None, embedded: EmbeddedComfyUI | None) -> str | None:
    """The checkpoint to use when a request names none: the configured one; else, for the embedded ComfyUI
    without an SD1.5 checkpoint, the generated random-weight one (said loudly: its images are noise); else None
    (the workflow's own)."""
    if configured or embedded is None:
        return configured
    if (embedded.checkpoints_dir / SD15_DEFAULT_NAME).exists():
        return None
    name = await ensure_demo_checkpoint(embedded.home, embedded.checkpoints_dir)
    log.warning("no SD1.5 checkpoint (%s) in %s: using the generated %s. IT HAS RANDOM WEIGHTS: every image "
                "is noise. Put a real checkpoint there (or set DEFAULT_CHECKPOINT) for real images.",
                SD15_DEFAULT_NAME, embedded.checkpoints_dir, name)
    return name


if __name__ == "__main__":  # pragma: no cover - a helper for humans: python -m pyworker.embedded
    logging.basicConfig(level=logging.INFO)

    async def _main() -> None:
        async with EmbeddedComfyUI(port=int(sys.argv[1]) if len(sys.argv) > 1 else None) as comfy:
            print(comfy.url, flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
