"""The worker's settings: one typed object read once from the environment (and the command line).

Every variable, its default and meaning:

| variable | default | |
|---|---|---|
| WORKER_PORT | 3000 | port of the HTTP service |
| COMFYUI_URL | (unset) | a running ComfyUI; unset: the worker starts the embedded one itself |
| COMFYUI_HOME | .comfyui/ in the project | where misc/comfyui/setup.sh installed the embedded ComfyUI |
| COMFYUI_OUTPUT_DIR | (unset) | ComfyUI's output folder when it is on this machine (files read in place); unset with COMFYUI_URL: outputs are fetched through /view |
| WORKER_DATA_DIR | /tmp/pyworker | outputs fetched from a remote ComfyUI are kept here |
| DEFAULT_CHECKPOINT | (unset) | the checkpoint modifiers use when a request names none |
| DEFAULT_WORKFLOW | misc/workflows/sd15_default.json | the RawWorkflow modifier's workflow (API format) |
| MODIFIERS_DIR | (unset) | a folder of the operator's own modifier files (*.json), added to misc/modifiers/ |
| S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, S3_BUCKET_NAME, S3_ENDPOINT_URL, S3_REGION | (unset) | the default S3 target; a request's `s3` replaces it as a whole |
| S3_KEY_PREFIX | "" | prepended to every key `{request_id}/{filename}` |
| S3_URL_EXPIRY | 604800 (7 days) | seconds a presigned output URL stays valid |
| WEBHOOK_URL, WEBHOOK_TIMEOUT (30), WEBHOOK_SECRET | (unset) | default webhook; a request's `webhook` fields take precedence one by one |
| JOB_TIMEOUT | 3600 | seconds a job may run in ComfyUI before it is interrupted (504) |
| MAX_BODY_BYTES | 67108864 | larger request bodies get 413 |
| IMAGE_MAX_BYTES | 52428800 | largest input image (URL or base64) |
| IMAGE_FETCH_TIMEOUT | 30 | seconds to fetch an input image URL |
| ALLOW_PRIVATE_IMAGE_URLS | false | allow input image URLs on private, loopback and link-local addresses |
| LOG_FORMAT | text | `text` for people, `json` for JSON lines |
"""

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

    def __repr__(self) -> str:  # the S3 target hides its own secret
        fields = {f: getattr(self, f) for f in self.__struct_fields__}
        if fields["webhook_secret"]:
            fields["webhook_secret"] = "***"
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
