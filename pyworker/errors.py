"""The worker's errors. Each class knows the HTTP status it becomes and builds its message from its fields.

    WorkerError                      500  root; never shows internals to a client
    ├── Unauthorized                 401  (autoscaler/auth.py) bad, missing or replayed signature
    ├── MalformedEnvelope            422  (autoscaler/auth.py) the autoscaler's envelope, field by field
    ├── TooBusy                      429  (admission.py) the queue is full; Retry-After
    ├── NotReady                     503  (http/app.py) ComfyUI down or the benchmark not finished
    ├── BadRequest                   400  invalid input; ``path`` names the field ($.input.modifications.steps)
    │   └── ComfyValidationError     400  ComfyUI refused the prompt; carries ``error`` and ``node_errors``
    ├── ComfyError                   502  talking to ComfyUI went wrong
    │   ├── ComfyUnreachable         502  connection refused / ComfyUI gone or restarted mid-job
    │   └── ComfyProtocolError       502  ComfyUI answered something this worker does not understand
    └── ComfyExecutionError          500  the workflow failed inside ComfyUI (node id, type, exception)
"""

from __future__ import annotations

from typing import Any


class WorkerError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON body of the HTTP answer: only what is safe for a client to see."""
        return {"error": self.message}

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(WorkerError):
    status = 400

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    def body(self) -> dict[str, Any]:
        body = super().body()
        if self.path:
            body["path"] = self.path
        return body


class ComfyValidationError(BadRequest):
    """POST /prompt answered 400: ``error`` is ComfyUI's top-level error, ``node_errors`` per node id."""

    def __init__(self, error: dict[str, Any] | str, node_errors: dict[str, Any]) -> None:
        self.error = error
        self.node_errors = node_errors
        super().__init__(_describe_validation(error, node_errors), path="$.input.workflow_json")

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["node_errors"] = self.node_errors
        return body


def _describe_validation(error: dict[str, Any] | str, node_errors: dict[str, Any]) -> str:
    head = error if isinstance(error, str) else str(error.get("message") or error.get("type") or error)
    lines = [f"ComfyUI refused the workflow: {head}"]
    for node_id, info in node_errors.items():
        class_type = info.get("class_type", "?") if isinstance(info, dict) else "?"
        errors = info.get("errors", []) if isinstance(info, dict) else []
        detail = "; ".join(
            f"{e.get('message', '')}{': ' + e['details'] if e.get('details') else ''}"
            for e in errors
            if isinstance(e, dict)
        )
        lines.append(f"node {node_id} ({class_type}): {detail}")
    return "\n".join(lines)


class ComfyError(WorkerError):
    status = 502


class ComfyUnreachable(ComfyError):
    pass


class ComfyProtocolError(ComfyError):
    pass


class ComfyExecutionError(WorkerError):
    status = 500

    def __init__(self, node_id: str, node_type: str, exception_type: str, exception_message: str) -> None:
        self.node_id, self.node_type = node_id, node_type
        self.exception_type, self.exception_message = exception_type, exception_message
        super().__init__(f"node {node_id} ({node_type}) failed: {exception_type}: {exception_message}")

