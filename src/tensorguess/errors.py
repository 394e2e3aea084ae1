"""The exception types that reach the user as a sentence instead of a traceback."""

from __future__ import annotations


class TensorguessError(Exception):
    """A problem with the user's input (a folder, an image, a model file) and how to fix it."""


class InvalidOption(TensorguessError, ValueError):
    """A setting out of its range or not among its choices; the command line exits 2 on it."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (or its type's name), cut to `limit` characters.

    Libraries put whole stack dumps and op definitions in their messages; the user needs the
    line that says what went wrong.
    """
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]
