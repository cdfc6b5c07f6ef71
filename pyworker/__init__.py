"""pyworker: serves a ComfyUI on one GPU machine to an autoscaler's traffic."""

__version__ = "0.1.0"
