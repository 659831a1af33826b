"""``maps.json``: the map contents and attachments the runtime loads, as sorted, plain data.

Nothing in here is code: IP-set members, the endpoint -> object table and the node-wide
configuration can all change without rebuilding an object. The format::

    {
      "format": 1,
      "maps": [{"name", "type", "key_size", "value_size", "max_entries", "flags", "shared"}],
      "config": {"endpoint_to_host": "Drop", ..., "value": "<hex of struct tortie_config>"},
      "sets": [{"id": "s:…:4", "id64": "0x…", "family": 4, "kind": "selector"|"named-port",
                "members": ["10.0.0.1/32", …] | [["10.0.0.1/32", 6, 80], …]}],
      "endpoints": [{"id": "ns/pod", "kind": "WorkloadEndpoint", "interface": "cali…",
                     "tc_ingress": "p-….bpf.o", "tc_egress": "p-….bpf.o"}],
      "objects": {"p-…": {"rules": n, "chunks": n, "hook": "tc_ingress"|"tc_egress"}},
      "dispatch": "d-….bpf.o",   # the dispatcher object (see layout.DISPATCH_MAPS)
      "log_rules": [{"id64": "0x…", "owner": "np/ns/x", "direction": "ingress", "rule": 2}]
    }

Interfaces are names; the loader resolves them to ifindexes when it attaches. Set keys are
built by :func:`layout.set_key`, the same definition the C code was generated from.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from compiler.frontend.model import FelixConfig
from compiler.ir import nodes as ir
from compiler.targets.ebpf import layout
from compiler.targets.ebpf.lower import LogRule

CT_TIMEOUT_TCP_S = 7200  # an established TCP flow idle this long must be re-approved
CT_TIMEOUT_OTHER_S = 300
FRAG_TIMEOUT_S = 30
E2H = {"Drop": layout.E2H_DROP, "Accept": layout.E2H_ACCEPT, "Return": layout.E2H_RETURN}


@dataclass(frozen=True, slots=True)
class SetData:
    id: str
    family: int
    named_port: bool
    members: tuple[ir.IPNet, ...] = ()
    port_members: tuple[tuple[ir.IPNet, int, int], ...] = ()

    @property
    def id64(self) -> int:
        return layout.stable_id64(self.id)

    def entries(self) -> list[tuple[bytes, bytes]]:
        """(key, value) bytes of every member."""
        value = layout.SET_VALUE.pack(flags=1)
        out = []
        for net in self.members:
            out.append(
                (
                    layout.set_key(
                        self.family, self.id64, net.network_address.packed, net.prefixlen
                    ),
                    value,
                )
            )
        for net, proto, port in self.port_members:
            key = layout.set_key(
                self.family, self.id64, net.network_address.packed, net.prefixlen, proto, port
            )
            out.append((key, value))
        return sorted(out)

    def as_json(self) -> dict[str, object]:
        members: list[object]
        if self.named_port:
            members = [[str(n), proto, port] for n, proto, port in self.port_members]
        else:
            members = [str(n) for n in self.members]
        return {
            "id": self.id,
            "id64": f"0x{self.id64:016x}",
            "family": self.family,
            "kind": "named-port" if self.named_port else "selector",
            "members": members,
        }


def _net_key(n: ir.IPNet) -> tuple[int, int, int]:
    return (n.version, int(n.network_address), n.prefixlen)


def set_data(program: ir.Program, set_ids: Iterable[str]) -> list[SetData]:
    out = []
    for sid in sorted(set(set_ids)):
        s = program.sets[sid]
        family = s.family or 4
        if s.is_named_port:
            pm = sorted(
                (m for m in (s.port_members or ()) if m[0].version == family),
                key=lambda m: (*_net_key(m[0]), m[1], m[2]),
            )
            out.append(SetData(sid, family, True, port_members=tuple(pm)))
        else:
            mem = sorted((n for n in (s.members or ()) if n.version == family), key=_net_key)
            out.append(SetData(sid, family, False, members=tuple(mem)))
    return out


def host_sets(ips: Sequence[ir.IPAddr]) -> list[SetData]:
    out = []
    for family in (4, 6):
        nets = tuple(ipaddress.ip_network(a) for a in ips if a.version == family)
        out.append(SetData(layout.HOST_SET_ID, family, False, members=nets))
    return out


def config_value(felix: FelixConfig) -> bytes:
    """Entry 0 of ``tortie_config``. The host-IP set has one id in both families' maps; the
    programs look it up in the map of the packet's family."""
    hi, lo = layout.split_id(layout.stable_id64(layout.HOST_SET_ID))
    return layout.CONFIG.pack(
        endpoint_to_host=E2H.get(felix.default_endpoint_to_host_action, layout.E2H_DROP),
        flags=layout.CFG_F_NONE,
        ct_timeout_tcp_s=CT_TIMEOUT_TCP_S,
        ct_timeout_other_s=CT_TIMEOUT_OTHER_S,
        frag_timeout_s=FRAG_TIMEOUT_S,
        host_set_hi=hi,
        host_set_lo=lo,
    )


def maps_json(
    *,
    felix: FelixConfig,
    sets: Sequence[SetData],
    endpoints: Sequence[Mapping[str, object]],
    objects: Mapping[str, Mapping[str, object]],
    log_rules: Iterable[LogRule],
    dispatch: str,
) -> bytes:
    doc = {
        "format": 1,
        "dispatch": dispatch,
        "maps": [
            {
                "name": m.name,
                "type": m.type,
                "key_size": m.key_size,
                "value_size": m.value_size,
                "max_entries": m.max_entries,
                "flags": m.flags,
                "shared": m.shared,
            }
            for m in layout.MAPS
        ],
        "config": {
            "endpoint_to_host": felix.default_endpoint_to_host_action,
            "ct_timeout_tcp_s": CT_TIMEOUT_TCP_S,
            "ct_timeout_other_s": CT_TIMEOUT_OTHER_S,
            "frag_timeout_s": FRAG_TIMEOUT_S,
            "value": config_value(felix).hex(),
        },
        "sets": [s.as_json() for s in sorted(sets, key=lambda s: (s.id, s.family))],
        "endpoints": sorted(endpoints, key=lambda e: str(e["id"])),
        "objects": {k: dict(sorted(v.items())) for k, v in sorted(objects.items())},
        "log_rules": [
            {
                "id64": f"0x{r.id64:016x}",
                "owner": r.owner,
                "direction": r.direction,
                "rule": r.rule_index,
            }
            for r in sorted(set(log_rules), key=lambda r: (r.owner, r.direction, r.rule_index))
        ],
    }
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
