"""Driving ComfyUI over its HTTP API and websocket.

- :mod:`.events`: websocket frames -> typed events (no I/O)
- :mod:`.state`: one prompt's state machine fed those events (no I/O)
- :mod:`.api`: ComfyUI's HTTP endpoints
- :mod:`.client`: the websocket, event routing, reconnects, and the job API ``ComfyClient.run``
"""

from pyworker.comfy_ws.client import ComfyClient, ProgressCallback
from pyworker.comfy_ws.state import NodeFailure, NodeTiming, Output, Phase, PromptResult, Update

__all__ = ["ComfyClient", "NodeFailure", "NodeTiming", "Output", "Phase", "ProgressCallback", "PromptResult", "Update"]
