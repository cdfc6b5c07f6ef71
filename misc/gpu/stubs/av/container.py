"""Stub of av.container (see av/__init__.py)."""

from av import _Unavailable


class Container(_Unavailable):
    pass


class InputContainer(Container):
    pass


class OutputContainer(Container):
    pass
