"""Context-sensitive tokenizer for selectors (SEMANTICS.md §Selectors, Lexical rules).

Calico's tokenizer decides what a word is from the token before it, which a regular lexer cannot
do, so this small hand-written scanner feeds the LALR grammar in ``selector.lark``:

* Operator words (``contains``, ``starts with``, ``ends with``, ``in``, ``not in``) are recognised
  only straight after a label. Elsewhere the same words are ordinary labels, so ``in in {"a"}``
  is valid. Two-word operators take any run of spaces/tabs between the words, or none.
* ``has(``, ``all(`` and ``global(`` are matched as exact prefixes, with no space before ``(``;
  ``has (a)`` therefore lexes as the label ``has`` followed by ``(``.
* A run of ``!`` (spaces allowed between them) becomes one ``BANGS`` token, so ``!!!!…`` costs
  nothing and the parser never recurses on it.
* Parenthesis depth is capped at :data:`MAX_NESTING` so that later tree walks stay far from
  Python's recursion limit.

Tokens are produced lazily, so the error reported is always the leftmost one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import SelectorError

if TYPE_CHECKING:
    from lark import Token

MAX_LABEL_LENGTH = 512
MAX_NESTING = 100

_WHITESPACE = " \t"
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")
_PUNCT = {"(": "_LPAR", ")": "_RPAR", "{": "_LBRACE", "}": "_RBRACE", ",": "_COMMA"}
_DOUBLED = {"=": ("_EQ", "'=='"), "&": ("_AND", "'&&'"), "|": ("_OR", "'||'")}
#: Operators after a label, in the order Calico tries them.
_OPERATORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("_CONTAINS", ("contains",)),
    ("_STARTSWITH", ("starts", "with")),
    ("_ENDSWITH", ("ends", "with")),
    ("_NOTIN", ("not", "in")),
    ("_IN", ("in",)),
)
OPERATOR_TEXT = "'==', '!=', 'contains', 'starts with', 'ends with', 'in' or 'not in'"


def describe_char(c: str) -> str:
    """``'%'`` for printable characters, ``'\\n'`` style escapes for the rest."""
    return repr(c)


class TokenStream:
    """One tokenization of one selector; also what the parser's custom lexer iterates."""

    __slots__ = ("text", "last_label", "last_start", "_pos", "_depth")

    def __init__(self, text: str) -> None:
        self.text = text
        #: The most recent label (for "expected an operator after label …" messages).
        self.last_label: str | None = None
        #: Where the most recently produced token starts (``len(text)`` once the end is reached).
        self.last_start = 0
        self._pos = 0
        self._depth = 0

    # -- small scanning helpers -------------------------------------------------------------

    def _skip_ws(self, i: int) -> int:
        text = self.text
        while i < len(text) and text[i] in _WHITESPACE:
            i += 1
        return i

    def _ident_end(self, i: int) -> int:
        text = self.text
        while i < len(text) and text[i] in _IDENT_CHARS:
            i += 1
        return i

    def _at_boundary(self, i: int) -> bool:
        return i >= len(self.text) or self.text[i] not in _IDENT_CHARS

    def _read_label(self, i: int, after: str) -> tuple[str, int]:
        end = self._ident_end(i)
        if end == i:
            found = "end of selector" if i >= len(self.text) else describe_char(self.text[i])
            raise SelectorError(f"expected a label after {after}, found {found}", i)
        if end - i > MAX_LABEL_LENGTH:
            raise SelectorError(f"label too long ({end - i} > {MAX_LABEL_LENGTH} characters)", i)
        return self.text[i:end], end

    def _close_call(self, i: int, name: str) -> int:
        i = self._skip_ws(i)
        if i < len(self.text) and self.text[i] == ")":
            return i + 1
        found = "end of selector" if i >= len(self.text) else describe_char(self.text[i])
        raise SelectorError(f"expected ')' to close '{name}(', found {found}", i)

    def _match_operator(self, i: int) -> tuple[str, int] | None:
        text = self.text
        for kind, words in _OPERATORS:
            j = i
            for n, word in enumerate(words):
                if not text.startswith(word, j):
                    break
                j += len(word)
                if n + 1 < len(words):
                    j = self._skip_ws(j)
            else:
                if self._at_boundary(j):
                    return kind, j
        return None

    # -- the tokenizer ----------------------------------------------------------------------

    def __iter__(self) -> Iterator[Token]:
        from lark import Token  # only the LALR parser (.lalr) iterates: lark stays unimported

        for kind, value, start, end in self.scan():
            yield Token(kind, value, start_pos=start, line=1, column=start + 1, end_pos=end)

    def scan(self) -> Iterator[tuple[str, str, int, int]]:
        """The tokens as ``(type, value, start, end)``, lazily (what ``__iter__`` wraps into
        lark Tokens; the recursive-descent parser reads these directly)."""
        text = self.text
        last = ""
        while True:
            i = self._skip_ws(self._pos)
            if i >= len(text):
                self._pos = self.last_start = len(text)
                return
            c = text[i]
            kind: str
            value: str
            end = i + 1
            if c in _PUNCT:
                kind, value = _PUNCT[c], c
                if c == "(":
                    self._depth += 1
                    if self._depth > MAX_NESTING:
                        raise SelectorError(
                            f"selector nested too deeply (more than {MAX_NESTING} levels of "
                            "parentheses)",
                            i,
                        )
                elif c == ")":
                    self._depth = max(0, self._depth - 1)
            elif c in "\"'":
                close = text.find(c, i + 1)
                if close < 0:
                    raise SelectorError("unterminated string literal", i)
                kind, value, end = "STRING", text[i + 1 : close], close + 1
            elif c in _DOUBLED:
                kind, shown = _DOUBLED[c]
                if not text.startswith(c + c, i):
                    raise SelectorError(f"unexpected {describe_char(c)}; did you mean {shown}?", i)
                value, end = c + c, i + 2
            elif c == "!":
                if text.startswith("!=", i):
                    kind, value, end = "_NE", "!=", i + 2
                else:
                    end = i + 1
                    while True:
                        j = self._skip_ws(end)
                        if j < len(text) and text[j] == "!" and not text.startswith("!=", j):
                            end = j + 1
                        else:
                            break
                    kind, value = "BANGS", text[i:end]
            elif c not in _IDENT_CHARS:
                raise SelectorError(f"unexpected character {describe_char(c)}", i)
            elif last == "LABEL":
                op = self._match_operator(i)
                if op is None:
                    raise SelectorError(
                        f'expected {OPERATOR_TEXT} after label "{self.last_label}"', i
                    )
                kind, end = op
                value = text[i:end]
            elif text.startswith("has(", i):
                j = self._skip_ws(i + 4)
                value, j = self._read_label(j, "'has('")
                kind, end = "HAS", self._close_call(j, "has")
            elif text.startswith("all(", i):
                kind, value, end = "ALL", "all()", self._close_call(i + 4, "all")
            elif text.startswith("global(", i):
                kind, value, end = "GLOBAL", "global()", self._close_call(i + 7, "global")
            else:
                value, end = self._read_label(i, "the start")  # never empty: c is a key char
                kind = "LABEL"
                self.last_label = value
            self._pos = end
            self.last_start = i
            last = kind
            yield kind, value, i, end
