"""The one error class for user errors.

A :class:`UserError` is a mistake the user can fix (a bad config value, a missing file, an
unknown name): every command-line entry point prints it as one line ``error: <message>`` and
exits with status 2, without a traceback. Any other exception is a bug and keeps its traceback.

It subclasses ``ValueError`` so callers that already catch ``ValueError`` keep working.
"""
from __future__ import annotations


class UserError(ValueError):
    """A user error; its message says what is wrong and how to fix it."""
