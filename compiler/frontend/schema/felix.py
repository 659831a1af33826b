"""FelixConfiguration: the fields that change what policy means or how it is laid out.

Only the fields of SEMANTICS.md's FelixConfiguration table are read. Every other field Felix
knows is accepted and ignored (it tunes timers, logging, MTUs, BPF map sizes... that Tortie's
artifacts do not depend on); a field Felix does not know is an error, with a "did you mean".
``default`` is the cluster-wide configuration, ``node.<name>`` overrides it field by field for one
node; Calico reads no other names (W008).
"""

from __future__ import annotations

import re

from compiler.frontend.model import PROTOCOLS, FailsafePort
from compiler.frontend.yaml_loader import Mapping

from .collect import Collector
from .fields import Fields, expect_map
from .meta import Doc, read_meta
from .values import check_safe, parse_cidr, parse_ip

__all__ = ["FELIX_IGNORED", "read_felix"]

# Read by Tortie: YAML name -> FelixConfig attribute.
FELIX_READ = {
    "iptablesFilterDenyAction": "deny_action",
    "nftablesFilterDenyAction": "nft_deny_action",
    "defaultEndpointToHostAction": "default_endpoint_to_host_action",
    "failsafeInboundHostPorts": "failsafe_inbound",
    "failsafeOutboundHostPorts": "failsafe_outbound",
    "disableConntrackInvalidCheck": "disable_conntrack_invalid_check",
    "logPrefix": "log_prefix",
    "logActionRateLimit": "log_rate_limit",
    "logActionRateLimitBurst": "log_rate_limit_burst",
    "iptablesMarkMask": "mark_mask",
    "nftablesMarkMask": "nft_mark_mask",
    "maxIpsetSize": "max_ipset_size",
    "chainInsertMode": "chain_insert_mode",
    "allowVXLANPacketsFromWorkloads": "allow_vxlan_from_workloads",
    "allowIPIPPacketsFromWorkloads": "allow_ipip_from_workloads",
    "natOutgoingAddress": "nat_outgoing_address",
    "routeSource": "route_source",
    "deviceRouteProtocol": "device_route_protocol",
    "bpfEnabled": "bpf_enabled",
    "bpfMapSizeIPSets": "bpf_map_size_ipsets",
    "iptablesBackend": "iptables_backend",
    "nftablesMode": "nftables_mode",
}

# Known to Felix, no effect on Tortie's artifacts: accepted and ignored.
FELIX_IGNORED = frozenset(
    [
        "useInternalDataplaneDriver",
        "dataplaneDriver",
        "dataplaneWatchdogTimeout",
        "ipv6Support",
        "routeRefreshInterval",
        "interfaceRefreshInterval",
        "iptablesRefreshInterval",
        "iptablesPostWriteCheckInterval",
        "iptablesLockFilePath",
        "iptablesLockTimeout",
        "iptablesLockProbeInterval",
        "featureDetectOverride",
        "featureGates",
        "ipsetsRefreshInterval",
        "xdpRefreshInterval",
        "netlinkTimeout",
        "metadataAddr",
        "metadataPort",
        "openstackRegion",
        "interfacePrefix",
        "interfaceExclude",
        "iptablesFilterAllowAction",
        "iptablesMangleAllowAction",
        "logFilePath",
        "logSeverityFile",
        "logSeverityScreen",
        "logSeveritySys",
        "logDebugFilenameRegex",
        "ipipEnabled",
        "ipipMTU",
        "vxlanEnabled",
        "vxlanMTU",
        "vxlanMTUV6",
        "vxlanPort",
        "vxlanVNI",
        "reportingInterval",
        "reportingTTL",
        "endpointReportingEnabled",
        "endpointReportingDelay",
        "endpointStatusPathPrefix",
        "healthEnabled",
        "healthHost",
        "healthPort",
        "healthTimeoutOverrides",
        "prometheusMetricsEnabled",
        "prometheusMetricsHost",
        "prometheusMetricsPort",
        "prometheusGoMetricsEnabled",
        "prometheusProcessMetricsEnabled",
        "prometheusWireGuardMetricsEnabled",
        "prometheusMetricsCAFile",
        "prometheusMetricsCertFile",
        "prometheusMetricsKeyFile",
        "kubeNodePortRanges",
        "policySyncPathPrefix",
        "usageReportingEnabled",
        "usageReportingInitialDelay",
        "usageReportingInterval",
        "natPortRange",
        "natOutgoingExclusions",
        "deviceRouteSourceAddress",
        "deviceRouteSourceAddressIPv6",
        "removeExternalRoutes",
        "ipForwarding",
        "externalNodesList",
        "debugMemoryProfilePath",
        "debugDisableLogDropping",
        "debugSimulateCalcGraphHangAfter",
        "debugSimulateDataplaneHangAfter",
        "debugSimulateDataplaneApplyDelay",
        "debugHost",
        "debugPort",
        "iptablesNATOutgoingInterfaceFilter",
        "sidecarAccelerationEnabled",
        "xdpEnabled",
        "genericXDPEnabled",
        "nftablesRefreshInterval",
        "nftablesFilterAllowAction",
        "nftablesMangleAllowAction",
        "bpfDisableUnprivileged",
        "bpfLogLevel",
        "bpfLogFilters",
        "bpfCTLBLogFilter",
        "bpfDataIfacePattern",
        "bpfL3IfacePattern",
        "bpfConnectTimeLoadBalancingEnabled",
        "bpfConnectTimeLoadBalancing",
        "bpfHostNetworkedNATWithoutCTLB",
        "bpfExternalServiceMode",
        "bpfDSROptoutCIDRs",
        "bpfExtToServiceConnmark",
        "bpfKubeProxyIptablesCleanupEnabled",
        "bpfKubeProxyMinSyncPeriod",
        "bpfKubeProxyEndpointSlicesEnabled",
        "bpfKubeProxyHealthzPort",
        "bpfPSNATPorts",
        "bpfMapSizeNATFrontend",
        "bpfMapSizeNATBackend",
        "bpfMapSizeNATAffinity",
        "bpfMapSizeRoute",
        "bpfMapSizeConntrack",
        "bpfMapSizeConntrackCleanupQueue",
        "bpfMapSizePerCpuConntrack",
        "bpfMapSizeIfState",
        "bpfHostConntrackBypass",
        "bpfEnforceRPF",
        "bpfPolicyDebugEnabled",
        "bpfForceTrackPacketsFromIfaces",
        "bpfDisableGROForIfaces",
        "bpfExcludeCIDRsFromNAT",
        "bpfRedirectToPeer",
        "bpfProfiling",
        "bpfAttachType",
        "bpfConntrackLogLevel",
        "bpfConntrackMode",
        "bpfConntrackCleanupMode",
        "bpfConntrackTimeouts",
        "bpfExportBufferSizeMB",
        "bpfJITHardening",
        "bpfMaglevMaxEndpointsPerService",
        "bpfMaglevMaxServices",
        "bpfIPv6Support",
        "cgroupV2Path",
        "routeTableRanges",
        "routeTableRange",
        "routeSyncDisabled",
        "wireguardEnabled",
        "wireguardEnabledV6",
        "wireguardThreadingEnabled",
        "wireguardListeningPort",
        "wireguardListeningPortV6",
        "wireguardRoutingRulePriority",
        "wireguardInterfaceName",
        "wireguardInterfaceNameV6",
        "wireguardMTU",
        "wireguardMTUV6",
        "wireguardHostEncryptionEnabled",
        "wireguardKeepAlive",
        "awsSrcDstCheck",
        "serviceLoopPrevention",
        "workloadSourceSpoofing",
        "mtuIfacePattern",
        "floatingIPs",
        "windowsManageFirewallRules",
        "goGCThreshold",
        "goMemoryLimitMB",
        "goMaxProcs",
        "requireMTUFile",
        "programClusterRoutes",
        "ipv4ElevatedRoutePriority",
        "ipv4NormalRoutePriority",
        "ipv6ElevatedRoutePriority",
        "ipv6NormalRoutePriority",
        "liveMigrationRouteConvergenceTime",
        "flowLogsFlushInterval",
        "flowLogsCollectorDebugTrace",
        "flowLogsGoldmaneServer",
        "flowLogsLocalReporter",
        "flowLogsPolicyEvaluationMode",
        "istioAmbientMode",
        "istioDSCPMark",
    ]
)

_RATE = re.compile(r"[1-9][0-9]{0,5}/(second|minute|hour|day)\Z")


def _failsafes(f: Fields, key: str) -> tuple[FailsafePort, ...]:
    sink = f.sink
    out = []
    for item in f.seq(key):
        m = expect_map(sink, item, f"a {key} entry")
        if m is None:
            continue
        pf = Fields(sink, m, f"{key} entry", ("protocol", "port", "net"))
        proto = (
            pf.enum("protocol", ("TCP", "UDP", "SCTP"), fold=True) if pf.has("protocol") else "TCP"
        )
        port = pf.int("port", 1, 65535, required=True)
        net_node = pf.str_node("net")
        net = (
            parse_cidr(sink, net_node, "failsafe net")
            if net_node is not None and net_node.value
            else None
        )
        if proto is not None and port is not None:
            out.append(FailsafePort(PROTOCOLS[proto], port, net))
    return tuple(out)


def _mask(f: Fields, key: str) -> int | None:
    node = f.scalar(key)
    if node is None:
        return None
    v = node.value
    if isinstance(v, str):
        try:
            v = int(v, 0)
        except ValueError:
            f.wrong(key, "a 32-bit mask such as 0xffff0000", node)
            return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
        f.sink.error("E023", f'"{key}" must be a 32-bit mask such as 0xffff0000', node.span)
        return None
    if bin(v).count("1") < 5:
        f.sink.error(
            "E023",
            f'"{key}" 0x{v:08x} has fewer than 5 bits: policy needs accept, pass, drop and two scratch bits',
            node.span,
        )
        return None
    return v


def _read_values(f: Fields) -> dict[str, object]:
    """The FelixConfig attributes this resource sets (absent fields are not in the dict)."""
    values: dict[str, object] = {
        "deny_action": f.enum("iptablesFilterDenyAction", ("Drop", "Reject"), fold=True),
        "nft_deny_action": f.enum("nftablesFilterDenyAction", ("Drop", "Reject"), fold=True),
        "default_endpoint_to_host_action": f.enum(
            "defaultEndpointToHostAction", ("Drop", "Return", "Accept"), fold=True
        ),
        "disable_conntrack_invalid_check": f.bool("disableConntrackInvalidCheck"),
        "log_rate_limit_burst": f.int("logActionRateLimitBurst", 0, 9999),
        "mark_mask": _mask(f, "iptablesMarkMask"),
        "nft_mark_mask": _mask(f, "nftablesMarkMask"),
        "max_ipset_size": f.int("maxIpsetSize", 1, 2**31 - 1),
        "chain_insert_mode": (f.enum("chainInsertMode", ("insert", "append"), fold=True)),
        "allow_vxlan_from_workloads": f.bool("allowVXLANPacketsFromWorkloads"),
        "allow_ipip_from_workloads": f.bool("allowIPIPPacketsFromWorkloads"),
        "route_source": f.enum("routeSource", ("WorkloadIPs", "CalicoIPAM"), fold=True),
        "device_route_protocol": f.int("deviceRouteProtocol", 0, 255),
        "bpf_enabled": f.bool("bpfEnabled"),
        "bpf_map_size_ipsets": f.int("bpfMapSizeIPSets", 1, 2**31 - 1),
        "iptables_backend": f.enum("iptablesBackend", ("Auto", "Legacy", "NFT"), fold=True),
        "nftables_mode": f.enum("nftablesMode", ("Auto", "Enabled", "Disabled"), fold=True),
    }
    prefix = f.str_node("logPrefix")
    if prefix is not None and check_safe(f.sink, prefix, "logPrefix"):
        values["log_prefix"] = str(prefix.value)
    rate = f.str_node("logActionRateLimit")
    if rate is not None:
        if _RATE.match(str(rate.value)):
            values["log_rate_limit"] = str(rate.value)
        else:
            f.sink.error(
                "E023",
                f'"logActionRateLimit" must look like 10/second (per second, minute, hour or day), not {rate.value!r}',
                rate.span,
            )
    nat = f.str_node("natOutgoingAddress")
    if nat is not None and nat.value and parse_ip(f.sink, nat, "natOutgoingAddress") is not None:
        values["nat_outgoing_address"] = str(nat.value).strip()
    if f.has("failsafeInboundHostPorts"):
        values["failsafe_inbound"] = _failsafes(f, "failsafeInboundHostPorts")
    if f.has("failsafeOutboundHostPorts"):
        values["failsafe_outbound"] = _failsafes(f, "failsafeOutboundHostPorts")
    return {k: v for k, v in values.items() if v is not None}


def read_felix(doc: Doc, col: Collector) -> None:
    sink = doc.sink
    meta = read_meta(doc, namespaced=False)
    m = expect_map(sink, doc.node.get("spec"), '"spec"')
    f = Fields(
        sink,
        m if m is not None else Mapping([], doc.span),
        "FelixConfiguration spec",
        FELIX_READ,
        FELIX_IGNORED,
    )
    before = sink.error_count
    values = _read_values(f)
    if sink.error_count > before:
        return
    if meta.name != "default" and not meta.name.startswith("node."):
        sink.warning(
            "W008",
            f'FelixConfiguration {meta.name!r} is never read: Calico uses "default" and "node.<name>"',
            meta.name_span,
        )
        return
    if col.claim("FelixConfiguration", None, meta.name, meta.name_span, "FelixConfiguration"):
        col.felix[meta.name] = (values, doc.span)
