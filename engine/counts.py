"""A number with its noun in the right number, for messages."""

from __future__ import annotations


def count(number: int, singular: str, plural: str | None = None) -> str:
    """Return ``number`` followed by ``singular``, or by its plural (``singular`` + "s" unless given)."""
    if number == 1:
        return f"{number:,} {singular}"
    return f"{number:,} {plural if plural is not None else singular + 's'}"
