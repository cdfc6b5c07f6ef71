"""Settings read from the environment: defaults, conversions, and clear errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyworker.settings import S3Target, SettingsError, from_env


def test_defaults() -> None:
    s = from_env({})
    assert (s.worker_port, s.comfyui_url, s.s3, s.webhook_url) == (3000, None, None, None)
    assert (s.webhook_timeout, s.s3_url_expiry, s.log_format) == (30.0, 604800, "text")


def test_values_are_converted() -> None:
    s = from_env({"WORKER_PORT": "3001", "COMFYUI_URL": "http://127.0.0.1:8188", "COMFYUI_OUTPUT_DIR": "/srv/out",
                  "WEBHOOK_TIMEOUT": "2.5", "ALLOW_PRIVATE_IMAGE_URLS": "true", "LOG_FORMAT": "json",
                  "S3_ACCESS_KEY_ID": "AK", "S3_SECRET_ACCESS_KEY": "SK", "S3_BUCKET_NAME": "bucket",
                  "S3_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert s.worker_port == 3001 and s.comfyui_output_dir == Path("/srv/out") and s.webhook_timeout == 2.5
    assert s.allow_private_image_urls is True and s.log_format == "json"
    assert s.s3 == S3Target(access_key_id="AK", secret_access_key="SK", bucket_name="bucket",
                            endpoint_url="http://127.0.0.1:9000", region="us-east-1")


def test_overrides_win() -> None:
    assert from_env({"WORKER_PORT": "3001"}, worker_port=4000).worker_port == 4000


@pytest.mark.parametrize(("env", "named"), [
    ({"WORKER_PORT": "http"}, "WORKER_PORT"),
    ({"WORKER_PORT": "70000"}, "WORKER_PORT"),
    ({"WEBHOOK_TIMEOUT": "0"}, "WEBHOOK_TIMEOUT"),
    ({"JOB_TIMEOUT": "soon"}, "JOB_TIMEOUT"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"ALLOW_PRIVATE_IMAGE_URLS": "perhaps"}, "ALLOW_PRIVATE_IMAGE_URLS"),
    ({"S3_URL_EXPIRY": "9999999"}, "S3_URL_EXPIRY"),
    ({"S3_BUCKET_NAME": "b"}, "S3_ACCESS_KEY_ID"),
])
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as info:
        from_env(env)
    assert named in str(info.value)


def test_secrets_never_in_repr() -> None:
    s = from_env({"S3_ACCESS_KEY_ID": "AK", "S3_SECRET_ACCESS_KEY": "very-secret", "S3_BUCKET_NAME": "bucket",
                  "WEBHOOK_SECRET": "hook-secret"})
    assert "very-secret" not in repr(s) and "hook-secret" not in repr(s)
