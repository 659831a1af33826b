"""Names and quoting for iptables-restore and ipset restore input.

Everything user-controlled that reaches a rendered file goes through one of these doors:

* :func:`limited` — chain names (iptables: at most **28** characters, ``XT_EXTENSION_MAXNAMELEN``
  29 with the NUL). A suffix that is clean and fits is kept readable (``tt-pi-knp/a/allow``);
  anything else becomes ``prefix + "_" + hash``, exactly Calico's ``limited()`` rule, extended to
  also hash suffixes with characters the restore parser or a reader could trip over.
* :func:`quoted` — a double-quoted argument (``--comment``, ``--log-prefix``). iptables-restore
  does understand ``\\"`` and ``\\\\`` inside quotes (and iptables-save escapes ``'``), but the
  safest string is one that needs no escapes at all: ``"``, ``'`` and ``\\`` become ``_``, every
  character outside printable ASCII
  (newlines, NUL, control and non-ASCII characters) becomes ``?``, and the text is cut to a
  byte limit. A hostile name can therefore never end the quoted argument, start a new option,
  or start a new line (which would be a new restore command).
* :func:`file_comment` — a ``#`` line (ignored by both iptables-restore and ipset restore).
* :func:`set_name` — ipset names (at most **31** characters, ``IPSET_MAXNAMELEN`` 32 with the
  NUL), derived from the IR set id (itself a hash of the canonical selector), like Calico's
  ``cali40s:…``.

Interface names are never sanitised, only validated (:func:`is_ifname`): a changed name would
silently match another interface, and ``+`` is iptables' wildcard.

>>> limited("tt-pi-", "knp/a/allow")
'tt-pi-knp/a/allow'
>>> limited("tt-pi-", "gnp/a-policy-name-that-is-far-too-long")
'tt-pi-_6UBW2Yw0MpcFNItt0Nm5z'
>>> quoted('evil" -j ACCEPT\\n-A INPUT')
'"evil_ -j ACCEPT?-A INPUT"'
>>> set_name("s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug:4", 4)
'tt4s:5y5I3VdRZfDU01O--xXAPx2yxC'
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re

CHAIN_MAX = 28  # iptables chain name limit (XT_EXTENSION_MAXNAMELEN - 1)
SET_MAX = 31  # ipset name limit (IPSET_MAXNAMELEN - 1)
COMMENT_MAX = 255  # xt_comment: XT_MAX_COMMENT_LEN 256 with the NUL
LOG_PREFIX_MAX = 29  # xt_LOG: 30 bytes with the NUL ("Maximum prefix length 29")
IFNAME_MAX = 15  # IFNAMSIZ - 1

CHAIN_PREFIX = "tt-"  # every chain Tortie owns starts with this
SET_PREFIX = "tt"  # every set Tortie owns: "tt4…" / "tt6…"
HOOK_COMMENT = "tortie:hook"  # marks the jump rules Tortie puts into built-in chains

_CLEAN_SUFFIX = re.compile(r"[A-Za-z0-9_.:/=-]+")
_UNSAFE = re.compile(r"[^ !#-&(-\[\]-~]")  # printable ASCII except " (0x22) ' (0x27) \ (0x5c)
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def b64hash(text: str) -> str:
    """URL-safe base64 (no padding) of SHA-256(text): seed- and machine-independent."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def limited(prefix: str, suffix: str, max_len: int = CHAIN_MAX) -> str:
    """``prefix + suffix`` if it fits and is clean, else ``prefix + "_" + hash(suffix)``.

    As in Calico, a literal name that is exactly ``max_len`` long with a suffix starting with
    ``_`` is hashed too, so a literal name can never equal a hashed one. An empty suffix counts
    as ``"_"``.
    """
    suffix = suffix or "_"
    name = prefix + suffix
    fits = len(name) < max_len or (len(name) == max_len and not suffix.startswith("_"))
    if fits and _CLEAN_SUFFIX.fullmatch(suffix):
        return name
    room = max_len - 1 - len(prefix)
    if room < 8:
        raise ValueError(f"chain prefix {prefix!r} leaves no room for a hash")
    return prefix + "_" + b64hash(suffix)[:room]


_QUOTES = str.maketrans({'"': "_", "'": "_", "\\": "_"})


def sanitize(text: str, limit: int) -> str:
    """``text`` with quotes and backslashes -> ``_``, anything else unsafe -> ``?``, cut to
    ``limit`` characters (ASCII only, so also bytes)."""
    text = text.translate(_QUOTES)
    if not (text.isascii() and text.isprintable()):  # printable ASCII is all safe by now
        text = _UNSAFE.sub("?", text)
    return text[:limit]


@functools.lru_cache(maxsize=1 << 16)
def quoted(text: str, limit: int = COMMENT_MAX) -> str:
    """``text`` as one double-quoted restore argument that cannot break out of its quotes."""
    return '"' + sanitize(text, limit) + '"'


def file_comment(text: str) -> str:
    """One ``# …`` line (no newline can sneak in)."""
    return "# " + sanitize(text, 400)


def is_ifname(name: str) -> bool:
    """An interface name iptables can match literally (no ``+`` wildcard, 1-15 characters)."""
    return _IFNAME.fullmatch(name) is not None


def _id_body(set_id: str, family: int) -> str:
    """The IR set id without the family suffix the family split added (``s:…:4`` -> ``s:…``)."""
    tail = f":{family}"
    return set_id[: -len(tail)] if set_id.endswith(tail) else set_id


def set_name(set_id: str, family: int) -> str:
    """The ipset name of IR set ``set_id`` (``tt4`` / ``tt6`` + the id, cut to 31 characters)."""
    name = f"{SET_PREFIX}{family}{_id_body(set_id, family)}"[:SET_MAX]
    if not _CLEAN_SUFFIX.fullmatch(name):  # ids are hashes; this only guards against surprises
        name = f"{SET_PREFIX}{family}x:{b64hash(set_id)}"[:SET_MAX]
    return name


def temp_set_name(real: str) -> str:
    """The temporary set used to refill ``real`` atomically (``tt4s:…`` -> ``tt4ts:…``)."""
    return (real[:3] + "t" + real[3:])[:SET_MAX]


def host_set_name(family: int) -> str:
    """The set of this node's own addresses (workload -> host traffic, ``*`` host endpoint)."""
    return f"{SET_PREFIX}{family}-host"


_OWN_SET = re.compile(r"t[tab][46](t?[A-Za-z]:\S+|t?-host)|tt[46]-all|tt-on-[ab]")
_OWN_CHAIN_PREFIXES = (CHAIN_PREFIX, "ta-", "tb-")


def is_own_set(name: str) -> bool:
    """Whether an ipset name is one Tortie renders (real, temporary or host set), or one of the
    runtime's: a generation's copy (``ta4…`` / ``tb4…``) or a switch set
    (:mod:`.generations`)."""
    return _OWN_SET.fullmatch(name) is not None


def is_own_chain(name: str) -> bool:
    """Tortie's chains: ``tt-…`` and the runtime's generations ``ta-…`` / ``tb-…``."""
    return name.startswith(_OWN_CHAIN_PREFIXES)
