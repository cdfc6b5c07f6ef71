"""Modifiers: named workflow templates with typed parameters, loaded from data files.

A modifier file (``misc/modifiers/NAME.json``, or the operator's ``MODIFIERS_DIR``) holds a ``workflow`` (a path
relative to the file, ``$DEFAULT_WORKFLOW``, or an inline API-format graph) and ``parameters``, each with a
``type`` (string, int, float, bool, image), optional ``min``/``max``/``choices``/``default``/``required``,
and a ``target``: ``ROLE.INPUT`` where ROLE is ``sampler`` or one of the sampler's linked inputs (``positive``,
``negative``, ``latent_image``, ``model``), found by following the graph's links upstream from the sampler
to the first node that has INPUT as a value; or ``#NODE_ID.INPUT`` for a fixed node. No hard-coded node ids
are needed, so RawWorkflow works for any workflow built from the standard nodes. ``parameters_from`` names a
file whose parameters are included (the file's own win).
"""

from __future__ import annotations

import random
from collections import deque
from pathlib import Path
from typing import Any, Literal

import msgspec

from pyworker.errors import BadRequest

ParamType = Literal["string", "int", "float", "bool", "image"]
SAMPLER_LINKS = ("positive", "negative", "latent_image")


class Parameter(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: ParamType
    target: str
    min: float | None = None
    max: float | None = None
    choices: list[Any] | None = None
    default: Any = None  # "random" for a random int, "$DEFAULT_CHECKPOINT" for the operator's checkpoint
    required: bool = False


class _File(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    description: str = ""
    workflow: str | dict[str, Any] | None = None
    parameters_from: str | None = None
    parameters: dict[str, Parameter] = {}


class ImageInput(msgspec.Struct, frozen=True):
    """An image parameter's value (URL or base64) that must be uploaded to ComfyUI, then set as node.input."""

    node_id: str
    input: str
    source: str
    path: str  # the JSON path of the value, for errors


class Modifier:
    def __init__(self, name: str, description: str, workflow: dict[str, Any], parameters: dict[str, Parameter],
                 default_checkpoint: str | None) -> None:
        self.name = name
        self.description = description
        self.workflow = workflow
        self.parameters = parameters
        self.default_checkpoint = default_checkpoint
        self._encoded = msgspec.json.encode(workflow)
        # Each parameter's node in this workflow, or None where the graph has no such role.
        self.targets: dict[str, tuple[str, str] | None] = {
            key: resolve_target(workflow, p.target) for key, p in parameters.items()
        }

    def apply(self, modifications: dict[str, Any]) -> tuple[dict[str, Any], list[ImageInput]]:
        """A fresh copy of the workflow with the modifications (validated) applied."""
        accepted = ", ".join(sorted(k for k, t in self.targets.items() if t is not None))
        for key in modifications:
            if key not in self.parameters:
                raise BadRequest(f"unknown modification {key!r} for {self.name}; accepted: {accepted}",
                                 path=f"$.input.modifications.{key}")
            if self.targets[key] is None:
                raise BadRequest(f"modification {key!r} does not apply to this {self.name} workflow (it has no "
                                 f"{self.parameters[key].target.split('.')[0]}); accepted: {accepted}",
                                 path=f"$.input.modifications.{key}")
        workflow: dict[str, Any] = msgspec.json.decode(self._encoded)
        images: list[ImageInput] = []
        for key, param in self.parameters.items():
            target = self.targets[key]
            path = f"$.input.modifications.{key}"
            if key in modifications:
                value = check_value(key, param, modifications[key], path)
            elif param.required:
                raise BadRequest(f"modification {key!r} is required by {self.name}", path=path)
            elif param.default == "random":
                value = random.randint(int(param.min or 0), int(param.max if param.max is not None else 2**32 - 1))
            elif param.default == "$DEFAULT_CHECKPOINT":
                value = self.default_checkpoint
            else:
                value = param.default
            if value is None or target is None:
                continue
            node_id, input_name = target
            if param.type == "image":
                images.append(ImageInput(node_id=node_id, input=input_name, source=value, path=path))
            else:
                workflow[node_id]["inputs"][input_name] = value
        return workflow, images


def check_value(key: str, param: Parameter, value: Any, path: str) -> Any:
    expected = {"string": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                "image": "an http(s) URL or base64 data"}[param.type]
    ok = {
        "string": isinstance(value, str),
        "image": isinstance(value, str) and len(value) > 0,
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
    }[param.type]
    bounds = ""
    if param.min is not None or param.max is not None:
        bounds = f" from {_num(param.min)} to {_num(param.max)}"
    if not ok:
        raise BadRequest(f"modification {key!r} must be {expected}{bounds}, got {_show(value)}", path=path)
    if (param.min is not None and value < param.min) or (param.max is not None and value > param.max):
        raise BadRequest(f"modification {key!r} must be {expected}{bounds}, got {_show(value)}", path=path)
    if param.choices is not None and value not in param.choices:
        raise BadRequest(f"modification {key!r} must be one of {param.choices}, got {_show(value)}", path=path)
    return float(value) if param.type == "float" else value


def _num(x: float | None) -> str:
    return "any" if x is None else (str(int(x)) if float(x).is_integer() else str(x))


def _show(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def find_sampler(workflow: dict[str, Any]) -> str | None:
    """The main sampler: a node with positive, negative and latent_image links whose latent does not come from
    another such node (so the first pass of a two-pass graph)."""
    samplers = [nid for nid, node in workflow.items()
                if all(_is_link(node.get("inputs", {}).get(k)) for k in SAMPLER_LINKS)]
    for nid in samplers:
        upstream = _upstream_nodes(workflow, workflow[nid]["inputs"]["latent_image"][0])
        if not any(other in upstream for other in samplers if other != nid):
            return nid
    return samplers[0] if samplers else None


def _upstream_nodes(workflow: dict[str, Any], start: str) -> set[str]:
    seen: set[str] = set()
    todo = deque([start])
    while todo and len(seen) < 1000:
        nid = todo.popleft()
        if nid in seen or nid not in workflow:
            continue
        seen.add(nid)
        todo.extend(v[0] for v in workflow[nid].get("inputs", {}).values() if _is_link(v))
    return seen


def resolve_target(workflow: dict[str, Any], target: str) -> tuple[str, str] | None:
    """``ROLE.INPUT`` or ``#ID.INPUT`` -> (node id, input name), or None when the graph has no such node."""
    role, _, input_name = target.partition(".")
    if role.startswith("#"):
        nid = role[1:]
        return (nid, input_name) if nid in workflow else None
    sampler = find_sampler(workflow)
    if sampler is None:
        return None
    if role == "sampler":
        return (sampler, input_name) if input_name in workflow[sampler].get("inputs", {}) else None
    link = workflow[sampler]["inputs"].get(role)
    if not _is_link(link):
        return None
    seen: set[str] = set()
    todo = deque([link[0]])
    while todo and len(seen) < 1000:  # breadth first: the nearest node that has the input as a value
        nid = todo.popleft()
        if nid in seen or nid not in workflow:
            continue
        seen.add(nid)
        inputs = workflow[nid].get("inputs", {})
        if input_name in inputs and not _is_link(inputs[input_name]):
            return nid, input_name
        todo.extend(v[0] for v in inputs.values() if _is_link(v))
    return None


class Modifiers:
    """Every modifier file of ``misc/modifiers`` and the operator's folder, loaded once at start-up."""

    def __init__(self, by_name: dict[str, Modifier]) -> None:
        self.by_name = by_name

    @classmethod
    def load(cls, folders: list[Path], default_workflow: Path, default_checkpoint: str | None) -> Modifiers:
        by_name: dict[str, Modifier] = {}
        for folder in folders:
            for path in sorted(folder.glob("*.json")):
                if path.name.startswith("_"):
                    continue
                try:
                    by_name[path.stem] = _load_file(path, default_workflow, default_checkpoint)
                except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise ValueError(f"modifier file {path}: {exc}") from None
        return cls(by_name)

    def get(self, name: str) -> Modifier:
        try:
            return self.by_name[name]
        except KeyError:
            raise BadRequest(f"unknown modifier {name!r}; known: {', '.join(sorted(self.by_name))}",
                             path="$.input.modifier") from None


def _load_file(path: Path, default_workflow: Path, default_checkpoint: str | None) -> Modifier:
    spec = msgspec.json.decode(path.read_bytes(), type=_File)
    params: dict[str, Parameter] = {}
    if spec.parameters_from:
        params.update(msgspec.json.decode((path.parent / spec.parameters_from).read_bytes(), type=_File).parameters)
    params.update(spec.parameters)
    if isinstance(spec.workflow, dict):
        workflow = spec.workflow
    elif spec.workflow == "$DEFAULT_WORKFLOW":
        workflow = msgspec.json.decode(default_workflow.read_bytes(), type=dict[str, Any])
    elif spec.workflow:
        workflow = msgspec.json.decode((path.parent / spec.workflow).read_bytes(), type=dict[str, Any])
    else:
        raise ValueError(f"modifier file {path} has no workflow")
    return Modifier(path.stem, spec.description, workflow, params, default_checkpoint)
