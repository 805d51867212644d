"""The one error class for user errors.

A :class:`UserError` is a mistake the user can fix (a bad config value, a missing file, an
unknown name): every command-line entry point prints it as one line ``error: <message>`` and
exits with status 2, without a traceback. Any other exception is a bug and keeps its traceback.

It subclasses ``ValueError`` so callers that already catch ``ValueError`` keep working.
"""
from __future__ import annotations


class UserError(ValueError):
    """A user error; its message says what is wrong and how to fix it."""


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def bad_choice(name: str, value, choices) -> UserError:
    """The error for ``name=value`` outside ``choices``: the value, the valid ones, the closest."""
    return UserError(f"{name}={value!r}; valid: {', '.join(repr(c) for c in choices)}"
                     + did_you_mean(value, choices))
