"""User-facing errors.

A :class:`DgxError` is a mistake the user can fix (bad flag, missing file). The
CLI prints its message as one line and exits with code 2, without a traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DgxError(Exception):
    """An error caused by user input: what is wrong, where, and how to fix it."""


def unknown_choice(kind: str, value: object, choices) -> DgxError:
    """The standard message for a name that is not in a registry."""
    return DgxError(f"unknown {kind} {value!r}; choose from: {', '.join(sorted(map(str, choices)))}")
