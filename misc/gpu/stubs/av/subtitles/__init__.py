"""Stub of av.subtitles (see av/__init__.py)."""
