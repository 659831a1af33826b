"""Target registry: a plain table of built-in targets (name -> "module:Class")."""

from __future__ import annotations

import importlib

from compiler.targets.base import Target

BUILTIN: dict[str, str] = {
    "nftables": "compiler.targets.nftables:NftablesTarget",
    "iptables": "compiler.targets.iptables:IptablesTarget",
    "ebpf": "compiler.targets.ebpf:EbpfTarget",
}


def get_target(name: str) -> Target:
    module, cls = BUILTIN[name].split(":")
    return getattr(importlib.import_module(module), cls)()
