"""Stand-in for torchvision in the embedded CPU ComfyUI.

PyPI's torchvision does not import beside the local torch 2.13.0 CPU wheel, but ComfyUI's comfy/sd.py imports
it at module level. Nothing on the default SD1.5 path uses it, so any attribute access raises ImportError,
which ComfyUI's optional nodes already handle.
"""


def __getattr__(name: str) -> object:
    raise ImportError(f"torchvision is not installed in this CPU ComfyUI (torchvision.{name})")
