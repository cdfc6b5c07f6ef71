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
