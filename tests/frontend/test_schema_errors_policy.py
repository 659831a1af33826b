"""Policy and rule validation: each error class with its exact rendered message (file:line:col,
code, source line, caret), including carets inside selector strings."""

from __future__ import annotations

import pytest

from compiler.diagnostics import DiagnosticSink, SourceRegistry, render_all
from compiler.frontend import load_text


def rendered(text: str) -> str:
    """Every diagnostic of ``text`` (as file t.yaml), rendered as the CLI prints them."""
    sink, sources = DiagnosticSink(), SourceRegistry()
    load_text(text, "t.yaml", sink, sources)
    return render_all(sink.sorted(), sources)


CASES = {
    "unknown_field": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  selectr: all()\n"
            "  ingres: []\n"
        ),
        (
            't.yaml:6:3: error[E020]: unknown field "selectr" in GlobalNetworkPolicy spec (did you mean "selector"?)\n'
            "    selectr: all()\n"
            "    ^\n"
            't.yaml:7:3: error[E020]: unknown field "ingres" in GlobalNetworkPolicy spec (did you mean "ingress"?)\n'
            "    ingres: []\n"
            "    ^"
        ),
    ),
    "wrong_types": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  order: ten\n"
            "  types: Ingress\n"
            "  doNotTrack: 'yes'\n"
        ),
        (
            't.yaml:6:10: error[E021]: "order" must be a number, not a string\n'
            "    order: ten\n"
            "           ^\n"
            't.yaml:7:10: error[E021]: "types" must be a list, not a string\n'
            "    types: Ingress\n"
            "           ^\n"
            't.yaml:8:15: error[E021]: "doNotTrack" must be true or false, not a string\n'
            "    doNotTrack: 'yes'\n"
            "                ^"
        ),
    ),
    "selector_plain": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  selector: app == 'web' && && tier == 'x'\n"
        ),
        (
            "t.yaml:6:29: error[E030]: invalid selector: unexpected '&&'; expected an expression\n"
            "    selector: app == 'web' && && tier == 'x'\n"
            "                              ^"
        ),
    ),
    "selector_double_quoted": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            '  selector: "app == \\"web\\" & tier == \'x\'"\n'
        ),
        (
            "t.yaml:6:29: error[E030]: invalid selector: unexpected '&'; did you mean '&&'?\n"
            '    selector: "app == \\"web\\" & tier == \'x\'"\n'
            "                              ^"
        ),
    ),
    "selector_single_quoted": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  selector: 'app == ''web'' || role = ''db'''\n"
        ),
        (
            "t.yaml:6:37: error[E030]: invalid selector: unexpected '='; did you mean '=='?\n"
            "    selector: 'app == ''web'' || role = ''db'''\n"
            "                                      ^"
        ),
    ),
    "selector_block": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  selector: |\n"
            "    app == 'web'\n"
        ),
        (
            "t.yaml:6:13: error[E030]: invalid selector: unexpected character '\\n'\n"
            "    selector: |\n"
            "              ^"
        ),
    ),
    "selector_in_rule": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: NetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "  namespace: ns\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Allow\n"
            "    source:\n"
            "      selector: role in {'a' 'b'}\n"
        ),
        (
            "t.yaml:10:30: error[E030]: invalid source selector: unexpected string \"b\"; expected ',' or '}'\n"
            "        selector: role in {'a' 'b'}\n"
            "                               ^"
        ),
    ),
    "global_in_policy_selector": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  selector: global()\n"
        ),
        (
            "t.yaml:6:13: error[E031]: global() is not allowed in selector: it is valid only as the whole namespaceSelector of a rule's source or destination\n"
            "    selector: global()\n"
            "              ^"
        ),
    ),
    "global_combined": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Allow\n"
            "    source:\n"
            "      namespaceSelector: global() || team == 'a'\n"
        ),
        (
            "t.yaml:9:26: error[E031]: global() must be the entire source namespaceSelector, not combined with other expressions\n"
            "        namespaceSelector: global() || team == 'a'\n"
            "                           ^"
        ),
    ),
    "bad_cidr": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  egress:\n"
            "  - action: Allow\n"
            "    destination:\n"
            "      nets: [10.0.0.0/33, 10.1.2, 'fd00::/129']\n"
        ),
        (
            "t.yaml:9:14: error[E040]: invalid CIDR in nets '10.0.0.0/33': expected an address like 10.0.0.0/24 or fd00::/64\n"
            "        nets: [10.0.0.0/33, 10.1.2, 'fd00::/129']\n"
            "               ^\n"
            "t.yaml:9:27: error[E040]: invalid CIDR in nets '10.1.2': expected an address like 10.0.0.0/24 or fd00::/64\n"
            "        nets: [10.0.0.0/33, 10.1.2, 'fd00::/129']\n"
            "                            ^\n"
            "t.yaml:9:35: error[E040]: invalid CIDR in nets 'fd00::/129': expected an address like 10.0.0.0/24 or fd00::/64\n"
            "        nets: [10.0.0.0/33, 10.1.2, 'fd00::/129']\n"
            "                                    ^"
        ),
    ),
    "mixed_families": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Allow\n"
            "    source:\n"
            "      nets: [10.0.0.0/8]\n"
            "    destination:\n"
            "      notNets: ['fd00::/8']\n"
        ),
        (
            "t.yaml:11:17: error[E041]: destination notNets fd00::/8 is IPv6, but the rule already has IPv4 nets: one rule cannot mix address families\n"
            "        notNets: ['fd00::/8']\n"
            "                  ^\n"
            "  = note: the first IPv4 net is at t.yaml:9:14"
        ),
    ),
    "family_vs_ip_version": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Allow\n"
            "    ipVersion: 6\n"
            "    source:\n"
            "      nets: [10.0.0.0/8]\n"
        ),
        (
            "t.yaml:10:14: error[E041]: source nets 10.0.0.0/8 is IPv4 but the rule has ipVersion 6\n"
            "        nets: [10.0.0.0/8]\n"
            "               ^"
        ),
    ),
    "catch_all_not_nets": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Deny\n"
            "    source:\n"
            "      notNets: ['::/0']\n"
        ),
        (
            "t.yaml:9:17: error[E042]: notNets must not contain ::/0: the rule could never match\n"
            "        notNets: ['::/0']\n"
            "                  ^"
        ),
    ),
    "ports_range": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Allow\n"
            "    protocol: TCP\n"
            "    destination:\n"
            "      ports: [65536, '100:90', 'a:b', -1, 'http_2']\n"
        ),
        (
            "t.yaml:10:15: error[E050]: port 65536 is out of range 0-65535\n"
            "        ports: [65536, '100:90', 'a:b', -1, 'http_2']\n"
            "                ^\n"
            "t.yaml:10:22: error[E050]: port range '100:90' has its minimum above its maximum\n"
            "        ports: [65536, '100:90', 'a:b', -1, 'http_2']\n"
            "                       ^\n"
            "t.yaml:10:32: error[E050]: invalid port range 'a:b'\n"
            "        ports: [65536, '100:90', 'a:b', -1, 'http_2']\n"
            "                                 ^\n"
            "t.yaml:10:39: error[E050]: port -1 is out of range 0-65535\n"
            "        ports: [65536, '100:90', 'a:b', -1, 'http_2']\n"
            "                                        ^"
        ),
    ),
    "numeric_port_without_protocol": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Allow\n"
            "    destination:\n"
            "      ports: [http, 443]\n"
            "      notPorts: ['8000:8080']\n"
        ),
        (
            "t.yaml:9:21: error[E051]: numeric destination ports need protocol TCP, UDP or SCTP to be set\n"
            "        ports: [http, 443]\n"
            "                      ^\n"
            "t.yaml:10:18: error[E051]: numeric destination notPorts need protocol TCP, UDP or SCTP to be set\n"
            "        notPorts: ['8000:8080']\n"
            "                   ^"
        ),
    ),
    "ports_with_icmp": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Allow\n"
            "    protocol: ICMP\n"
            "    destination:\n"
            "      ports: [http]\n"
        ),
        (
            "t.yaml:10:15: error[E051]: destination ports need protocol TCP, UDP or SCTP, not ICMP\n"
            "        ports: [http]\n"
            "                ^"
        ),
    ),
    "bad_protocol": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Allow\n"
            "    protocol: tcpp\n"
            "  - action: Allow\n"
            "    protocol: 0\n"
            "  - action: Allow\n"
            "    notProtocol: 256\n"
        ),
        (
            "t.yaml:8:15: error[E052]: unknown protocol 'tcpp': use TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255\n"
            "      protocol: tcpp\n"
            "                ^\n"
            "t.yaml:10:15: error[E052]: protocol number must be 1-255, not 0\n"
            "      protocol: 0\n"
            "                ^\n"
            "t.yaml:12:18: error[E052]: notProtocol number must be 1-255, not 256\n"
            "      notProtocol: 256\n"
            "                   ^"
        ),
    ),
    "icmp_problems": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Allow\n"
            "    protocol: ICMP\n"
            "    icmp: {code: 1}\n"
            "  - action: Allow\n"
            "    protocol: TCP\n"
            "    icmp: {type: 8}\n"
            "  - action: Allow\n"
            "    protocol: ICMPv6\n"
            "    notICMP: {type: 255}\n"
        ),
        (
            "t.yaml:9:12: error[E053]: icmp code requires a type\n"
            "      icmp: {code: 1}\n"
            "             ^\n"
            "t.yaml:12:5: error[E053]: icmp needs protocol ICMP or ICMPv6\n"
            "      icmp: {type: 8}\n"
            "      ^\n"
            "t.yaml:15:21: error[E053]: notICMP type must be 0-254, not 255\n"
            "      notICMP: {type: 255}\n"
            "                      ^"
        ),
    ),
    "icmp_ip_version": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Allow\n"
            "    protocol: ICMP\n"
            "    ipVersion: 6\n"
            "  - action: Allow\n"
            "    protocol: 58\n"
            "    ipVersion: 4\n"
        ),
        (
            "t.yaml:8:15: error[E054]: protocol ICMP is IPv4-only but the rule has ipVersion 6 (use ICMPv6)\n"
            "      protocol: ICMP\n"
            "                ^\n"
            "t.yaml:11:15: error[E054]: protocol ICMPv6 is IPv6-only but the rule has ipVersion 4 (use ICMP)\n"
            "      protocol: 58\n"
            "                ^"
        ),
    ),
    "reject_action": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Reject\n"
            "  - action: allow\n"
            "  - protocol: TCP\n"
        ),
        (
            "t.yaml:7:13: error[E060]: there is no Reject action: use Deny (FelixConfiguration iptablesFilterDenyAction / nftablesFilterDenyAction: Reject makes every deny a reject)\n"
            "    - action: Reject\n"
            "              ^\n"
            "t.yaml:8:13: error[E060]: invalid action 'allow': use Allow, Deny, Log or Pass (did you mean \"Allow\"?)\n"
            "    - action: allow\n"
            "              ^\n"
            't.yaml:9:5: error[E022]: missing required field "action" in rule\n'
            "    - protocol: TCP\n"
            "      ^"
        ),
    ),
    "bad_types": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  types: [Ingress, Ingress, Forward]\n"
        ),
        (
            't.yaml:6:20: error[E061]: policy type "Ingress" is listed twice\n'
            "    types: [Ingress, Ingress, Forward]\n"
            "                     ^\n"
            't.yaml:6:29: error[E061]: policy type must be Ingress or Egress, not "Forward"\n'
            "    types: [Ingress, Ingress, Forward]\n"
            "                              ^"
        ),
    ),
    "gnp_only_fields_on_np": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: NetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "  namespace: ns\n"
            "spec:\n"
            "  namespaceSelector: all()\n"
            "  doNotTrack: true\n"
            "  preDNAT: false\n"
            "  applyOnForward: true\n"
        ),
        (
            't.yaml:7:3: error[E062]: "namespaceSelector" is allowed only on a GlobalNetworkPolicy, not on a namespaced NetworkPolicy\n'
            "    namespaceSelector: all()\n"
            "    ^\n"
            't.yaml:8:3: error[E062]: "doNotTrack" is allowed only on a GlobalNetworkPolicy, not on a namespaced NetworkPolicy\n'
            "    doNotTrack: true\n"
            "    ^\n"
            't.yaml:9:3: error[E062]: "preDNAT" is allowed only on a GlobalNetworkPolicy, not on a namespaced NetworkPolicy\n'
            "    preDNAT: false\n"
            "    ^\n"
            't.yaml:10:3: error[E062]: "applyOnForward" is allowed only on a GlobalNetworkPolicy, not on a namespaced NetworkPolicy\n'
            "    applyOnForward: true\n"
            "    ^"
        ),
    ),
    "pre_dnat_constraints": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  preDNAT: true\n"
            "  doNotTrack: true\n"
            "  egress:\n"
            "  - action: Allow\n"
        ),
        (
            "t.yaml:6:3: error[E063]: preDNAT and doNotTrack cannot both be true\n"
            "    preDNAT: true\n"
            "    ^\n"
            "t.yaml:6:3: error[E063]: preDNAT policies need applyOnForward: true\n"
            "    preDNAT: true\n"
            "    ^\n"
            "t.yaml:8:3: error[E063]: a preDNAT policy applies to ingress only: it cannot have egress rules or the Egress type\n"
            "    egress:\n"
            "    ^"
        ),
    ),
    "do_not_track_needs_aof": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  doNotTrack: true\n"
            "  applyOnForward: false\n"
        ),
        (
            "t.yaml:6:3: error[E063]: doNotTrack policies need applyOnForward: true\n"
            "    doNotTrack: true\n"
            "    ^"
        ),
    ),
    "undefined_tier": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  tier: securty\n"
        ),
        (
            "t.yaml:6:9: error[E064]: tier 'securty' is not defined (defined tiers: default, kube-admin, kube-baseline)\n"
            "    tier: securty\n"
            "          ^\n"
            "  = note: add a projectcalico.org/v3 Tier resource with this name"
        ),
    ),
    "services": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: NetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "  namespace: ns\n"
            "spec:\n"
            "  egress:\n"
            "  - action: Allow\n"
            "    destination:\n"
            "      services: {name: kube-dns, namespace: kube-system}\n"
            "      ports: [53]\n"
            "      selector: all()\n"
        ),
        (
            "t.yaml:10:7: error[E067]: rules that match Kubernetes services are not supported by Tortie (it reads no Service or EndpointSlice objects); use selector or nets instead\n"
            "        services: {name: kube-dns, namespace: kube-system}\n"
            "        ^\n"
            't.yaml:11:7: error[E065]: destination "services" cannot be combined with "ports"\n'
            "        ports: [53]\n"
            "        ^\n"
            "t.yaml:11:15: error[E051]: numeric destination ports need protocol TCP, UDP or SCTP to be set\n"
            "        ports: [53]\n"
            "                ^\n"
            't.yaml:12:7: error[E065]: destination "services" cannot be combined with "selector"\n'
            "        selector: all()\n"
            "        ^"
        ),
    ),
    "http_rules": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Deny\n"
            "    http: {methods: [GET]}\n"
            "  - action: Allow\n"
            "    protocol: UDP\n"
            "    http: {paths: [{exact: /}]}\n"
            "  - action: Allow\n"
            "    protocol: TCP\n"
            "    http:\n"
            "      paths:\n"
            "      - prefix: /api\n"
        ),
        (
            "t.yaml:8:5: error[E066]: http matches are allowed only on Allow rules, not Deny\n"
            "      http: {methods: [GET]}\n"
            "      ^\n"
            "t.yaml:11:5: error[E066]: http matches need protocol TCP (or none), not UDP\n"
            "      http: {paths: [{exact: /}]}\n"
            "      ^\n"
            "t.yaml:14:5: warning[W001]: http match is not enforced: the nftables, iptables and eBPF dataplanes work at L3/L4, so this rule allows every request that the rest of it matches\n"
            "      http:\n"
            "      ^"
        ),
    ),
    "unsafe_strings": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: FelixConfiguration\n"
            "metadata: {name: default}\n"
            "spec:\n"
            "  logPrefix: 'drop\" ; reboot'\n"
            "---\n"
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec:\n"
            "  ingress:\n"
            "  - action: Deny\n"
            "    metadata:\n"
            "      annotations:\n"
            '        why: "line one\\nline two"\n'
        ),
        (
            't.yaml:5:14: error[E026]: logPrefix must not contain the character ": it is written into generated files\n'
            "    logPrefix: 'drop\" ; reboot'\n"
            "               ^\n"
            "t.yaml:16:14: error[E026]: a rule annotation value must not contain a newline: it is written into generated files\n"
            '          why: "line one\\nline two"\n'
            "               ^"
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_diagnostics(name: str) -> None:
    text, expected = CASES[name]
    assert rendered(text) == expected
