"""Stub of av.subtitles.stream (see av/__init__.py)."""

from av import _Unavailable


class SubtitleStream(_Unavailable):
    pass
