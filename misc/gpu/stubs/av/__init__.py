"""Stand-in for PyAV (`av`) on the GPU benchmark machine, where PyAV is not installed (its wheel is ~40 MB).

ComfyUI 0.3.75 imports `av` at module level in comfy_api/latest (_ui.py, _input/video_types.py,
_input_impl/video_types.py), which nodes.py pulls in at start-up, and names a few of its classes at import
time (annotations, isinstance targets). The default SD1.5 text-to-image graph never decodes or encodes
video or audio, so this stub only provides the names; anything that would really use PyAV raises.
`__version__` is "0.0.0", so comfy_api_nodes/canary.py refuses to load the API nodes (they need pydantic too).
"""

__version__ = "0.0.0"
time_base = 1000000

_MESSAGE = "PyAV is not installed on this machine (av stub for the GPU benchmark)"


class _Unavailable:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise ImportError(_MESSAGE)

    @classmethod
    def from_ndarray(cls, *args: object, **kwargs: object) -> "_Unavailable":
        raise ImportError(_MESSAGE)


class VideoStream(_Unavailable):
    pass


class AudioStream(_Unavailable):
    pass


class VideoFrame(_Unavailable):
    pass


class AudioFrame(_Unavailable):
    pass


class AVError(Exception):
    pass


FFmpegError = AVError


def open(*args: object, **kwargs: object) -> object:
    raise ImportError(_MESSAGE)


def __getattr__(name: str) -> object:
    # Any other class-like name (e.g. av.SubtitleStream) gets a placeholder; other names are missing.
    if name[:1].isupper():
        placeholder = type(name, (_Unavailable,), {})
        globals()[name] = placeholder
        return placeholder
    raise AttributeError(f"module 'av' has no attribute {name!r} ({_MESSAGE})")
