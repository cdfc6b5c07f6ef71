"""The worker's settings: one typed object read once from the environment (and the command line).

Each field is the lower-case name of its variable (``worker_port`` <- ``WORKER_PORT``); the S3 target comes
from ``S3_*``. The variables, defaults and meanings are listed in the README's Settings table."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from pyworker.embedded import DEFAULT_HOME, MISC

Seconds = Annotated[float, msgspec.Meta(gt=0)]


class S3Target(msgspec.Struct, frozen=True, kw_only=True):
    access_key_id: str
    secret_access_key: str
    bucket_name: str
    endpoint_url: str | None = None
    region: str = "us-east-1"

    def __repr__(self) -> str:  # never print the secret
        return f"S3Target(bucket={self.bucket_name!r}, endpoint={self.endpoint_url!r}, region={self.region!r})"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    worker_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 3000
    comfyui_url: str | None = None
    comfyui_home: Path = DEFAULT_HOME
    comfyui_output_dir: Path | None = None
    worker_data_dir: Path = Path("/tmp/pyworker")
    default_checkpoint: str | None = None
    default_workflow: Path = MISC / "workflows" / "sd15_default.json"
    modifiers_dir: Path | None = None
    s3: S3Target | None = None
    s3_key_prefix: str = ""
    s3_url_expiry: Annotated[int, msgspec.Meta(ge=1, le=604800)] = 604800
    webhook_url: str | None = None
    webhook_timeout: Seconds = 30.0
    webhook_secret: str | None = None
    job_timeout: Seconds = 3600.0
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024 * 1024
    image_max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 50 * 1024 * 1024
    image_fetch_timeout: Seconds = 30.0
    allow_private_image_urls: bool = False
    log_format: Literal["text", "json"] = "text"
    pipeline: bool = True  # keep the next job in ComfyUI's queue and upload while it runs; false: strictly serial
    comfyui_base_dir: Path | None = None  # the embedded ComfyUI's --base-directory; default COMFYUI_HOME/base
    # The autoscaler (Vast.ai serverless)
    report_addr: list[str] = []
    container_id: str = "0"
    master_token: str = ""
    public_ipaddr: str | None = None
    vast_tcp_port: int | None = None  # from VAST_TCP_PORT_<WORKER_PORT>
    use_ssl: bool = False  # serve HTTPS with the instance's certificate (Vast: /etc/instance.crt and .key)
    ssl_cert: Path = Path("/etc/instance.crt")
    ssl_key: Path = Path("/etc/instance.key")
    unsecured: bool = False
    autoscaler_pubkey: Path | None = None  # a PEM file, instead of GET {REPORT_ADDR}/pubkey/
    replay_window: Annotated[int, msgspec.Meta(ge=1)] = 1000
    request_cost: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    max_queue_time: Seconds = 30.0
    # The start-up benchmark
    benchmark: Literal["auto", "on", "off"] = "auto"  # auto: when an autoscaler is configured
    benchmark_test_width: Annotated[int, msgspec.Meta(ge=16, le=16384)] = 512
    benchmark_test_height: Annotated[int, msgspec.Meta(ge=16, le=16384)] = 512
    benchmark_test_steps: Annotated[int, msgspec.Meta(ge=2, le=100000)] = 20
    benchmark_runs: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    benchmark_workflow: Path = MISC / "workflows" / "sd15_default.json"
    benchmark_report: Path | None = None  # default WORKER_DATA_DIR/benchmark.json
    benchmark_cache: Path | None = None  # default WORKER_DATA_DIR/benchmark-cache.json
    benchmark_screening: Literal["flag", "refuse"] = "flag"
    gpu_reference: Path = MISC / "gpu_reference.json"

    @property
    def behind_autoscaler(self) -> bool:
        return bool(self.report_addr)

    @property
    def run_benchmark(self) -> bool:
        return self.benchmark == "on" or (self.benchmark == "auto" and self.behind_autoscaler)

    @property
    def public_url(self) -> str:
        if not self.public_ipaddr or not self.vast_tcp_port:
            return ""
        return f"http{'s' if self.use_ssl else ''}://{self.public_ipaddr}:{self.vast_tcp_port}"

    def __repr__(self) -> str:  # the S3 target hides its own secret
        fields = {f: getattr(self, f) for f in self.__struct_fields__}
        for secret in ("webhook_secret", "master_token"):
            if fields[secret]:
                fields[secret] = "***"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"


class SettingsError(ValueError):
    """A bad environment variable; the message names it and says what is accepted."""


_S3_VARS = {"access_key_id": "S3_ACCESS_KEY_ID", "secret_access_key": "S3_SECRET_ACCESS_KEY",
            "bucket_name": "S3_BUCKET_NAME", "endpoint_url": "S3_ENDPOINT_URL", "region": "S3_REGION"}


def _dec_hook(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(kind)


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read every variable once. ``overrides`` (from the command line or tests) win over the environment."""
    env = os.environ if env is None else env
    raw: dict[str, object] = {}
    for field in msgspec.structs.fields(Settings):
        var = field.name.upper()
        if field.name != "s3" and env.get(var, "") != "":
            raw[field.name] = env[var]
    if "report_addr" in raw:
        raw["report_addr"] = [a.strip() for a in str(raw["report_addr"]).split(",") if a.strip()]
    port = str(overrides.get("worker_port") or env.get("WORKER_PORT") or 3000)
    if env.get(f"VAST_TCP_PORT_{port}"):
        raw["vast_tcp_port"] = env[f"VAST_TCP_PORT_{port}"]
    s3 = {k: env[v] for k, v in _S3_VARS.items() if env.get(v)}
    if s3:
        missing = [_S3_VARS[k] for k in ("access_key_id", "secret_access_key", "bucket_name") if k not in s3]
        if missing:
            raise SettingsError(f"S3 is partly configured: set {', '.join(missing)} too (or unset every S3_ variable)")
        raw["s3"] = s3
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(raw, Settings, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        message = str(exc)
        name = message.rsplit("$.", 1)[-1].rstrip("`").split(".")[0] if "$." in message else ""
        var = name.upper() if name else "a setting"
        raise SettingsError(f"{var}: {message.split(' - at ')[0]}") from None
