"""The one exception the selector parser raises for bad input."""

from __future__ import annotations


class SelectorError(ValueError):
    """A selector that does not parse.

    ``offset`` is the 0-based character offset into the selector text of the offending token
    (``len(text)`` when the text ended too early). ``message`` is a short sentence without the
    offset, ready for a diagnostic.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message, offset)
        self.message = message
        self.offset = offset

    def __str__(self) -> str:
        return f"{self.message} (at offset {self.offset})"

    def __reduce__(self) -> tuple[type[SelectorError], tuple[str, int]]:
        return (type(self), (self.message, self.offset))
