"""Validation of documents, kinds, names, labels and the non-policy resources: each error and
warning class with its exact rendered message."""

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
    "unknown_kind": (
        ("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicyy\nmetadata: {name: x}\n"),
        (
            "t.yaml:2:7: error[E011]: unknown kind 'GlobalNetworkPolicyy' for apiVersion projectcalico.org/v3 (did you mean \"GlobalNetworkPolicy\"?)\n"
            "  kind: GlobalNetworkPolicyy\n"
            "        ^"
        ),
    ),
    "unknown_api_version": (
        ("apiVersion: projectcalico.org/v2\nkind: NetworkPolicy\nmetadata: {name: x}\n"),
        (
            "t.yaml:1:13: error[E011]: unknown apiVersion 'projectcalico.org/v2' (did you mean \"projectcalico.org/v3\"?)\n"
            "  apiVersion: projectcalico.org/v2\n"
            "              ^"
        ),
    ),
    "crd_group": (
        ("apiVersion: crd.projectcalico.org/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: x}\n"),
        (
            "t.yaml:1:13: error[E012]: crd.projectcalico.org/v1 is Calico's internal storage format: export resources as projectcalico.org/v3 (calicoctl get -o yaml, or kubectl with the Calico API server)\n"
            "  apiVersion: crd.projectcalico.org/v1\n"
            "              ^"
        ),
    ),
    "admin_network_policy": (
        (
            "apiVersion: policy.networking.k8s.io/v1alpha1\n"
            "kind: AdminNetworkPolicy\n"
            "metadata: {name: x}\n"
        ),
        (
            "t.yaml:2:7: error[E012]: AdminNetworkPolicy (v1alpha1) is not supported: rewrite it as a policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy with tier Admin\n"
            "  kind: AdminNetworkPolicy\n"
            "        ^"
        ),
    ),
    "missing_kind": (
        ("apiVersion: v1\nmetadata: {name: x}\n"),
        ("t.yaml:1:1: error[E010]: a resource needs kind\n  apiVersion: v1\n  ^"),
    ),
    "not_a_mapping": (
        ("- a\n- b\n"),
        (
            "t.yaml:1:1: error[E007]: expected a resource (a mapping with apiVersion and kind), not a list\n"
            "  - a\n"
            "  ^"
        ),
    ),
    "missing_required": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: HostEndpoint\n"
            "metadata: {name: h}\n"
            "spec:\n"
            "  interfaceName: eth0\n"
        ),
        (
            't.yaml:5:3: error[E022]: missing required field "node" in HostEndpoint spec\n'
            "    interfaceName: eth0\n"
            "    ^"
        ),
    ),
    "duplicates": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec: {}\n"
            "---\n"
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: p\n"
            "spec: {}\n"
        ),
        (
            "t.yaml:10:9: error[E024]: duplicate GlobalNetworkPolicy 'p'\n"
            "    name: p\n"
            "          ^\n"
            "  = note: GlobalNetworkPolicy 'p' is first defined at t.yaml:4:9"
        ),
    ),
    "bad_names": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata:\n"
            "  name: Allow_All\n"
            "---\n"
            "apiVersion: projectcalico.org/v3\n"
            "kind: NetworkPolicy\n"
            "metadata:\n"
            "  name: ok\n"
            "  namespace: ns.x\n"
            "---\n"
            "apiVersion: projectcalico.org/v3\n"
            "kind: Tier\n"
            "metadata: {name: sec.urity}\n"
        ),
        (
            "t.yaml:4:9: error[E025]: invalid GlobalNetworkPolicy name 'Allow_All': must be a DNS-1123 subdomain (lower-case letters, digits and '-', in '.'-separated parts, starting and ending with a letter or digit, at most 253 characters)\n"
            "    name: Allow_All\n"
            "          ^\n"
            "t.yaml:10:14: error[E025]: invalid namespace 'ns.x': must be a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)\n"
            "    namespace: ns.x\n"
            "               ^\n"
            "t.yaml:14:18: error[E025]: invalid Tier name 'sec.urity': must be a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)\n"
            "  metadata: {name: sec.urity}\n"
            "                   ^"
        ),
    ),
    "bad_labels": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkSet\n"
            "metadata:\n"
            "  name: s\n"
            "  labels:\n"
            "    Bad_Key/x: a\n"
            "    -bad: b\n"
            "    good: 'not ok!'\n"
            "    num: 1\n"
            "    long: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
            "spec:\n"
            "  nets: [10.0.0.1/24]\n"
        ),
        (
            "t.yaml:6:5: error[E027]: invalid label key 'Bad_Key/x': its prefix must be a DNS-1123 subdomain (lower-case, at most 253 characters)\n"
            "      Bad_Key/x: a\n"
            "      ^\n"
            "t.yaml:7:5: error[E027]: invalid label key '-bad': its name must be at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit\n"
            "      -bad: b\n"
            "      ^\n"
            "t.yaml:8:11: error[E027]: invalid value 'not ok!' for label 'good': a label value must be empty or at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit\n"
            "      good: 'not ok!'\n"
            "            ^\n"
            "t.yaml:9:10: error[E021]: the value of label 'num' must be a string, not an integer (quote it)\n"
            "      num: 1\n"
            "           ^\n"
            "t.yaml:10:11: error[E027]: invalid value 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' for label 'long': a label value must be empty or at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit\n"
            "      long: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
            "            ^"
        ),
    ),
    "interface_names": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: HostEndpoint\n"
            "metadata: {name: h}\n"
            "spec:\n"
            "  node: n1\n"
            "  interfaceName: eth0-with-a-long-name\n"
            "---\n"
            "apiVersion: projectcalico.org/v3\n"
            "kind: HostEndpoint\n"
            "metadata: {name: h2}\n"
            "spec:\n"
            "  node: n1\n"
            "  interfaceName: 'eth 0'\n"
        ),
        (
            "t.yaml:5:3: error[E071]: a HostEndpoint needs interfaceName or expectedIPs (or both)\n"
            "    node: n1\n"
            "    ^\n"
            "t.yaml:6:18: error[E070]: invalid interface name 'eth0-with-a-long-name': 1-15 characters of letters, digits, '_', '.', ':', '-', or * for every interface\n"
            "    interfaceName: eth0-with-a-long-name\n"
            "                   ^\n"
            "t.yaml:12:3: error[E071]: a HostEndpoint needs interfaceName or expectedIPs (or both)\n"
            "    node: n1\n"
            "    ^\n"
            "t.yaml:13:18: error[E070]: invalid interface name 'eth 0': 1-15 characters of letters, digits, '_', '.', ':', '-', or * for every interface\n"
            "    interfaceName: 'eth 0'\n"
            "                   ^"
        ),
    ),
    "hep_without_interface": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: HostEndpoint\n"
            "metadata: {name: h}\n"
            "spec:\n"
            "  node: n1\n"
        ),
        (
            "t.yaml:5:3: error[E071]: a HostEndpoint needs interfaceName or expectedIPs (or both)\n"
            "    node: n1\n"
            "    ^"
        ),
    ),
    "wep_without_interface": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: WorkloadEndpoint\n"
            "metadata: {name: w, namespace: ns}\n"
            "spec:\n"
            "  node: n1\n"
            "  ipNetworks: [10.0.0.1/32]\n"
        ),
        (
            "t.yaml:5:3: error[E072]: a WorkloadEndpoint needs interfaceName (or orchestrator k8s and pod to derive it)\n"
            "    node: n1\n"
            "    ^"
        ),
    ),
    "ip_pool": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: IPPool\n"
            "metadata: {name: p}\n"
            "spec:\n"
            "  cidr: 10.0.0.0/28\n"
            "  ipipMode: Always\n"
            "  vxlanMode: CrossSubnet\n"
            "---\n"
            "apiVersion: projectcalico.org/v3\n"
            "kind: IPPool\n"
            "metadata: {name: p6}\n"
            "spec:\n"
            "  cidr: 'fd00::/64'\n"
            "  blockSize: 26\n"
            "  ipipMode: Always\n"
        ),
        (
            "t.yaml:5:9: error[E080]: pool 10.0.0.0/28 is smaller than one /26 block\n"
            "    cidr: 10.0.0.0/28\n"
            "          ^\n"
            "t.yaml:7:3: error[E080]: ipipMode and vxlanMode cannot both be enabled\n"
            "    vxlanMode: CrossSubnet\n"
            "    ^\n"
            't.yaml:14:14: error[E023]: "blockSize" must be in 116..128, not 26\n'
            "    blockSize: 26\n"
            "               ^\n"
            "t.yaml:15:13: error[E080]: IPIP encapsulation is IPv4-only\n"
            "    ipipMode: Always\n"
            "              ^"
        ),
    ),
    "bgp": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: BGPConfiguration\n"
            "metadata: {name: default}\n"
            "spec:\n"
            "  communities:\n"
            "  - name: c1\n"
            "    value: '65536:1'\n"
            "---\n"
            "apiVersion: projectcalico.org/v3\n"
            "kind: BGPPeer\n"
            "metadata: {name: p}\n"
            "spec:\n"
            "  node: n1\n"
            "  nodeSelector: all()\n"
            "  peerIP: 10.0.0.300\n"
            "  asNumber: 64512\n"
        ),
        (
            "t.yaml:7:12: error[E081]: community '65536:1' has a part above 65535\n"
            "      value: '65536:1'\n"
            "             ^\n"
            't.yaml:14:3: error[E081]: "node" and "nodeSelector" cannot both be set\n'
            "    nodeSelector: all()\n"
            "    ^\n"
            "t.yaml:15:11: error[E081]: invalid peerIP '10.0.0.300': use an address, address:port or [v6 address]:port\n"
            "    peerIP: 10.0.0.300\n"
            "            ^"
        ),
    ),
    "builtin_tier": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: Tier\n"
            "metadata: {name: default}\n"
            "spec:\n"
            "  order: 5\n"
        ),
        (
            "t.yaml:3:18: error[E068]: tier 'default' is built in (order 1000000, defaultAction Deny) and cannot be changed\n"
            "  metadata: {name: default}\n"
            "                   ^"
        ),
    ),
    "too_many_items": (
        (
            "apiVersion: policy.networking.k8s.io/v1alpha2\n"
            "kind: ClusterNetworkPolicy\n"
            "metadata: {name: c}\n"
            "spec:\n"
            "  tier: Admin\n"
            "  priority: 1\n"
            "  subject: {namespaces: {}}\n"
            "  ingress:\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
            "  - {action: Deny, from: [{namespaces: {}}]}\n"
        ),
        (
            't.yaml:9:3: error[E028]: "ingress" has 26 items; at most 25 are allowed\n'
            "    - {action: Deny, from: [{namespaces: {}}]}\n"
            "    ^"
        ),
    ),
    "warnings": (
        (
            "apiVersion: projectcalico.org/v3\n"
            "kind: GlobalNetworkPolicy\n"
            "metadata: {name: w, namespace: x}\n"
            "spec:\n"
            "  types: [Ingress]\n"
            "  egress: [{action: Allow}]\n"
            "---\n"
            "apiVersion: projectcalico.org/v3\n"
            "kind: KubeControllersConfiguration\n"
            "metadata: {name: default}\n"
            "---\n"
            "apiVersion: projectcalico.org/v3\n"
            "kind: FelixConfiguration\n"
            "metadata: {name: mine}\n"
            "---\n"
            "apiVersion: v1\n"
            "kind: Pod\n"
            "metadata: {name: p, namespace: nowhere}\n"
            "spec: {nodeName: n1}\n"
            "status: {podIP: 10.0.0.1}\n"
        ),
        (
            "t.yaml:3:32: warning[W006]: GlobalNetworkPolicy is cluster-scoped; metadata.namespace is ignored\n"
            "  metadata: {name: w, namespace: x}\n"
            "                                 ^\n"
            "t.yaml:6:3: warning[W002]: egress rules are never used: types does not include Egress\n"
            "    egress: [{action: Allow}]\n"
            "    ^\n"
            "t.yaml:9:7: warning[W005]: KubeControllersConfiguration is a Calico kind that Tortie does not use; it is ignored\n"
            "  kind: KubeControllersConfiguration\n"
            "        ^\n"
            't.yaml:14:18: warning[W008]: FelixConfiguration \'mine\' is never read: Calico uses "default" and "node.<name>"\n'
            "  metadata: {name: mine}\n"
            "                   ^\n"
            "t.yaml:16:1: warning[W004]: namespace 'nowhere' has no Namespace object in the input: its endpoints (nowhere/p and any others) reference the missing profile kns.nowhere, so they get no pcns. labels and no default allow\n"
            "  apiVersion: v1\n"
            "  ^\n"
            "  = note: Calico skips a profile that does not exist; add the Namespace (kubectl get namespaces -o yaml)"
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_diagnostics(name: str) -> None:
    text, expected = CASES[name]
    assert rendered(text) == expected


def test_selector_longer_than_1024_characters() -> None:
    long = " || ".join(f"a{i:03d} == 'x'" for i in range(80))
    out = rendered(
        f"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: p}}\nspec:\n  selector: {long}\n"
    )
    assert (
        out.splitlines()[0]
        == "t.yaml:5:13: error[E032]: selector is 1196 characters long; the limit is 1024"
    )


def test_an_undefined_profile_is_a_warning() -> None:
    out = rendered(
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\n"
        "spec: {node: n1, interfaceName: eth0, profiles: [open-all]}\n"
    )
    assert out.splitlines()[0] == (
        "t.yaml:1:1: warning[W009]: HostEndpoint h lists profile 'open-all', which is not defined: Calico skips it"
    )


def test_quotes_in_names_are_unsafe_not_just_invalid() -> None:
    out = rendered(
        'apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: "a\\"b"}\n'
        'spec: {}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: "x\\ny"}\n'
    )
    assert [line for line in out.splitlines() if "error" in line] == [
        "t.yaml:3:18: error[E026]: Tier name 'a\"b' must not contain the character \"",
        "t.yaml:8:18: error[E026]: Namespace name 'x\\ny' must not contain a newline",
    ]


def test_every_code_emitted_is_documented_in_codes_py() -> None:
    import re
    from pathlib import Path

    from compiler.frontend.codes import CODES

    root = Path(__file__).resolve().parents[2] / "compiler"
    files = [
        *root.glob("frontend/*.py"),
        *root.glob("frontend/schema/*.py"),
        *root.glob("cli/*.py"),
    ]
    used = {
        c
        for f in files
        if f.name != "codes.py"
        for c in re.findall(r'"([EW]\d{3})"', f.read_text())
    }
    assert used <= set(CODES), sorted(used - set(CODES))
    assert all(CODES[c] for c in CODES)
