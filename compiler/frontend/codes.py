"""Every diagnostic code the frontend emits, with a one-line meaning.

Codes are stable: tests, documentation and users' suppression lists refer to them. Add new codes
at the end of their group; never renumber or reuse one. ``E`` codes are errors (exit status 1),
``W`` codes are warnings.

Groups: E00x reading files and YAML; E01x documents and kinds; E02x fields and values;
E03x selectors; E04x addresses; E05x ports and protocols; E06x policy structure; E07x endpoints;
E08x IP pools and BGP.
"""

from __future__ import annotations

CODES: dict[str, str] = {
    # Reading files and YAML
    "E001": "malformed YAML or JSON (syntax error, bad character, unknown alias)",
    "E002": "an input path cannot be read (missing, unreadable)",
    "E003": "an input file is not UTF-8 text",
    "E004": "duplicate key in one YAML mapping",
    "E005": "unsupported YAML tag (only strings, numbers, booleans, null, maps and lists)",
    "E006": "YAML nested too deeply or aliases expanding to too many nodes",
    "E007": "a document is not a mapping, so it cannot be a resource",
    # Documents and kinds
    "E010": "a resource without apiVersion or kind",
    "E011": "unknown apiVersion or kind",
    "E012": "a known kind that Tortie does not support",
    # Fields and values
    "E020": "unknown field",
    "E021": "a field has the wrong type",
    "E022": "a required field is missing",
    "E023": "a value is not allowed (not one of the choices, out of range)",
    "E024": "duplicate resource (same kind, namespace and name)",
    "E025": "invalid resource name (DNS-1123 label or subdomain)",
    "E026": "a string holds a newline, quote, backslash or control character where it could reach "
    "a generated artifact",
    "E027": "invalid label key or value",
    "E028": "a list has too many items",
    # Selectors
    "E030": "invalid selector syntax",
    "E031": "global() outside the whole namespaceSelector of a rule's source or destination",
    "E032": "selector longer than 1024 characters",
    # Addresses
    "E040": "invalid IP address or CIDR",
    "E041": "IPv4 and IPv6 mixed in one rule, or a net that disagrees with ipVersion",
    "E042": "notNets holds 0.0.0.0/0 or ::/0 (the rule could never match)",
    # Ports and protocols
    "E050": "invalid port, port range or named port",
    "E051": "ports need protocol TCP, UDP or SCTP (numeric ports need it to be set)",
    "E052": "invalid protocol",
    "E053": "invalid ICMP match (code without type, out of range, non-ICMP protocol)",
    "E054": "protocol conflicts with ipVersion (ICMP with 6, ICMPv6 with 4)",
    # Policy structure
    "E060": "invalid rule action (there is no Reject action)",
    "E061": "invalid policy types",
    "E062": "a field that only a GlobalNetworkPolicy may have",
    "E063": "invalid preDNAT / doNotTrack / applyOnForward combination",
    "E064": "a policy refers to a tier that is not defined",
    "E065": "services in a rule combined with fields it excludes",
    "E066": "http match on a rule that is not Allow with protocol TCP (or unset)",
    "E067": "a Calico or Kubernetes feature that Tortie does not implement",
    "E068": "a built-in tier redefined with a different order or default action",
    # Endpoints
    "E070": "invalid interface name",
    "E071": "host endpoint without interfaceName and expectedIPs",
    "E072": "workload endpoint without an interface name Tortie can derive",
    # IP pools and BGP
    "E080": "invalid IP pool (block size, encapsulation, allowed uses)",
    "E081": "invalid BGP setting (AS number, community, peer scope or target)",
    # Warnings
    "W001": "http match accepted but not enforced by L3/L4 dataplanes",
    "W002": "rules for a direction the policy's types leave out are never used",
    "W003": "a directory holds no .yaml, .yml or .json files",
    "W004": "pods in a namespace that has no Namespace object (no kns. profile: no pcns. labels, "
    "no default allow)",
    "W005": "a Calico kind that Tortie reads but does not use",
    "W006": "metadata.namespace on a cluster-scoped resource is ignored",
    "W007": "a pod also described by a WorkloadEndpoint (the WorkloadEndpoint is used)",
    "W008": "configuration resource with a name Calico never reads (not default or node.<name>)",
    "W009": "an endpoint lists a profile that is not defined (Calico skips it)",
}


def summary(code: str) -> str:
    """The one-line meaning of ``code`` (KeyError for an unknown code: a bug in the caller)."""
    return CODES[code]
