"""Names, quoting and comments for the nftables script.

Everything user-controlled that reaches the script goes through one of three doors:

* :func:`nft_string` — a double-quoted nft string (comments, log prefixes, interface names).
  nft's scanner has **no escapes** in quoted strings (``\\"[^"]*\\"``), so a ``"`` can never be
  represented: it is replaced, as are ``\\``, ``$`` (nft expands ``$var`` in log prefixes) and
  every character outside printable ASCII (control characters, newlines, non-ASCII); the result
  is cut to a byte limit. Interface names are not sanitised but validated (:func:`is_ifname`):
  inside an nft string ``*`` is a wildcard, so a changed name would match other interfaces.
* :func:`ident` — a bare identifier (chain names). Clean ids are kept readable
  (``pol-ingress/knp/default/allow-web``); anything else becomes a slug plus a stable hash.
* :func:`script_comment` — a ``#`` line of the script (never loaded into the kernel): one line,
  same character policy.

Hashes are SHA-256 of the canonical id, base32 (lower case), so names never depend on the Python
hash seed or on the order things were seen in.

>>> nft_string('evil" ; flush ruleset ; "')
'"evil\\' ; flush ruleset ; \\'"'
>>> ident("pol-ingress/", "knp/default/allow-web")
'pol-ingress/knp/default/allow-web'
>>> ident("pol-ingress/", 'np/x/a"b')
'pol-ingress/np-x-a-b_jheuf736t7on'
"""

from __future__ import annotations

import base64
import hashlib
import re

# nft limits (nftables userspace: NFTNL_UDATA_COMMENT_MAXLEN = 128, incl. the NUL;
# kernel: NFT_CHAIN_MAXNAMELEN = NFT_SET_MAXNAMELEN = 256, incl. the NUL; NF_LOG_PREFIXLEN = 128).
COMMENT_MAX = 127
NAME_MAX = 200
LOG_PREFIX_MAX = 127

# Printable ASCII except '"' (0x22), '$' (0x24: nft expands variables in some strings, e.g. log
# prefixes) and '\' (0x5c).
_SAFE_CHARS = re.compile(r"[^ !#%-\[\]-~]")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_CLEAN_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
# A quoted nft string in script text: nft has no escapes in it, so a '"' always ends one (what
# reads references out of rule text skips these: a comment may hold any "@word" or "jump x").
NFT_STRING = re.compile(r'"[^"]*"')


_B32 = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lower case
_B32_MAX = 51  # characters that hold only digest bits (256 // 5)


def stable_hash(text: str, length: int = 12) -> str:
    """A short, seed-independent hash of ``text`` (base32 of SHA-256, lower case)."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    if length > _B32_MAX:  # the encoding's "=" padding included
        return base64.b32encode(digest).decode("ascii").lower()[:length]
    # Base32 is 5 bits per character from the start of the digest, written here from an
    # integer (``base64.b32encode`` is Python code that encodes the whole digest).
    bits = (length * 5 + 7) // 8 * 8
    value = int.from_bytes(digest[: bits // 8], "big")
    return "".join(
        [_B32[(value >> shift) & 31] for shift in range(bits - 5, bits - 5 * length - 1, -5)]
    )


def sanitize(text: str, limit: int | None = None) -> str:
    """``text`` with every character nft strings cannot hold safely replaced by ``'`` (for
    ``"``) or ``?``; cut to ``limit`` characters (ASCII, so also bytes) with a ``...`` marker."""
    text = text.replace('"', "'")
    # Printable ASCII without '$' or a backslash (most text) needs no regex scan: this runs for
    # every comment of the script.
    if not (text.isascii() and text.isprintable()) or "$" in text or "\\" in text:
        text = _SAFE_CHARS.sub("?", text)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


def nft_string(text: str, limit: int = COMMENT_MAX) -> str:
    """``text`` as a double-quoted nft string that cannot break out of its quotes."""
    return '"' + sanitize(text, limit) + '"'


def script_comment(text: str) -> str:
    """One ``# ...`` line of script text (no newline can sneak in)."""
    return "# " + sanitize(text)


def ident(prefix: str, key: str) -> str:
    """A chain or map name: ``prefix + key`` when ``key`` is a clean id, else a readable slug of
    ``key`` plus a stable hash of it (``_`` never appears in clean names, so the two forms cannot
    collide)."""
    if _CLEAN_IDENT.fullmatch(key) and len(prefix) + len(key) <= NAME_MAX and ".." not in key:
        return prefix + key
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", key).strip("-.")[:40].strip("-.") or "x"
    return f"{prefix}{slug}_{stable_hash(key)}"


def is_ifname(name: str) -> bool:
    """A Linux interface name nft can match literally (no wildcard, at most 15 bytes)."""
    return _IFNAME.fullmatch(name) is not None


def short_name(prefix: str, key: str) -> str:
    """A short deterministic name for objects whose ids are long (sets): ``prefix`` + hash."""
    return prefix + stable_hash(key)
