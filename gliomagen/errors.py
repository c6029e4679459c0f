"""Errors that mean "the input is wrong", not "the code is wrong".

The CLI prints any :class:`InputError` as one line (``gliomagen: <message>``) and exits with code 2, without a
traceback. Raise a subclass of it whenever the user can fix the problem (a bad file, a busy run folder, a
bad option); the message must name the file or option and the problem.
"""

from __future__ import annotations


class InputError(Exception):
    """A problem the user can fix: the message names the file or option and what is wrong with it."""


class UnsafeFileError(InputError):
    """A file we were asked to load could run code or does not match the hash recorded when it was written."""
