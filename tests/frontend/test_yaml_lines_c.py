"""The C line reader (``compiler/frontend/_yaml_lines.c``) against its specification, the Python
reader ``yaml_fast._read``: on every input both give up (None) or both return the same tree,
node for node. ``test_yaml_fast.py`` checks both against libyaml; this file adds inputs that
are mostly *outside* the subset (random text over YAML's punctuation), where the two must give
up at the same places, and checks that the C reader is the one in use where it can be built.
"""

from __future__ import annotations

import os
import random
import shutil

import pytest

from compiler.frontend import yaml_fast
from compiler.frontend.yaml_loader import MAX_DEPTH
from tests.frontend.test_yaml_fast import _diff

C = yaml_fast._yaml_lines
pytestmark = pytest.mark.skipif(C is None, reason="the C reader is not built (see setup.py)")


def python_read(text: str, name: str) -> list | None:
    try:
        return yaml_fast._read(text, name)
    except (yaml_fast._Bail, RecursionError):
        return None


def c_read(text: str, name: str) -> list | None:
    return C.read(
        text,
        name,
        yaml_fast.Scalar,
        yaml_fast.Mapping,
        yaml_fast.Sequence,
        yaml_fast._resolve_plain,
        yaml_fast._RESOLVABLE_FIRST,
        yaml_fast._BAD_FIRST,
        MAX_DEPTH,
    )


def same(text: str) -> bool:
    """Asserts both readers agree on ``text``; returns whether they took it."""
    a, b = c_read(text, "t.yaml"), python_read(text, "t.yaml")
    assert (a is None) == (b is None), (text, a, b)
    if a is None:
        return False
    assert len(a) == len(b), text
    for x, y in zip(a, b, strict=True):
        d = _diff(x, y)
        assert d is None, (text, d)
    return True


_ALPHABET = [*" -:#'\"\n{}[]&*!|>?,.%@`\\~<=", "a", "b", "1", "0x", "on", "  ", "- ", ": ", " #"]
_ALPHABET += ["---\n", "...\n", "\n  ", "\n- ", "key: ", "'it''s'", '"q"', "{}", "[]", "10.0.0.1"]


@pytest.mark.parametrize("seed", range(6))
def test_random_text_over_yaml_punctuation(seed: int) -> None:
    rng = random.Random(seed)
    taken = 0
    for _ in range(5000):
        text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 40)))
        taken += same(text)
    assert taken > 50  # some of it is in the subset, and there both build the same tree


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "# only a comment\n",
        "---\n---\n",
        "a:\n"
        + "".join("  " * i + "k:\n" for i in range(1, MAX_DEPTH + 5))
        + "  " * 300
        + "v: 1\n",
        "- " * 10 + "x\n",
        "a: 'x''y''z'\nb: ''\nc: \"\"\n",
        "a: 'x\n",
        'a: "x\n',
        "a: {} # c\nb: [] #c\nc: {}x\n",
        "a: 1\x00\n",
        "- 'a' # c\n- 'b'#c\n",
        "items:\n- a: 1\n  b:\n  - x\n  c: 2\n",
        "k" * 64 + ": 1\n" + "k" * 65 + ": 2\n" + "k" * 1000 + ": 3\n",
        "<<: 1\n",
        "a: <<\n",
        "? a\n",
        ": a\n",
        "a:  \n",
    ],
)
def test_edges(text: str) -> None:
    same(text)


def test_many_distinct_keys_overflow_the_key_cache() -> None:
    text = "".join(f"key-{i}: {i}\n" for i in range(20000))
    assert same(text)
    assert same(text + "key-7: dup\n") is False  # a duplicate key: both give up


class _NotSlotted:
    pass


@pytest.mark.parametrize("cls", [int, _NotSlotted, "Scalar"])
def test_wrong_classes_are_refused(cls: object) -> None:
    with pytest.raises((TypeError, AttributeError)):
        C.read("a: 1\n", "t", cls, cls, cls, yaml_fast._resolve_plain, "", "", 10)


def test_the_c_reader_is_in_use_where_it_can_be_built() -> None:
    if os.environ.get("TORTIE_PURE_PYTHON"):
        pytest.skip("TORTIE_PURE_PYTHON is set")
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here")
    assert yaml_fast.IMPLEMENTATION == "c"
