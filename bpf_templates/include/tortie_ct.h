/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking: Tortie's own LRU hash of approved flows (tortie_ct), not the kernel's
 * conntrack through kfuncs. Why: TC ingress runs before netfilter, so the kernel has no entry yet
 * for a flow's first packets; conntrack is only active in a netns where some netfilter rule asks
 * for it; and BPF_PROG_TEST_RUN tests would depend on the test runner's netns. See
 * compiler/targets/ebpf/__init__.py for the full decision.
 *
 * An entry means "policy allowed this flow on (ifindex, hook)". It is keyed by the tuple of the
 * packet that created it. A later packet is admitted when
 *   - its own tuple has an entry on the same interface and hook (same direction), or
 *   - it may be a reply (ct_reply_ok) and the reversed tuple has an entry on the same interface
 *     and the *other* hook: a reply of a flow that entered through tc ingress leaves through tc
 *     egress of the same interface, and the other way round.
 * A reply entry therefore admits exactly the reversed tuple, never another flow, and a TCP SYN
 * without ACK never uses conntrack: it always runs policy (and a denied SYN removes the entry).
 * An ICMP error quoting a packet of an approved flow is admitted as RELATED.
 * Entries expire after the configured idle time (tortie_config); the LRU evicts when full.
 */
#ifndef TORTIE_CT_H
#define TORTIE_CT_H

TORTIE_INLINE struct tortie_config *tortie_cfg(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&tortie_config, &zero);
}

TORTIE_INLINE int tortie_is_new_syn(const struct tortie_pkt *p)
{
	return p->proto == TORTIE_P_TCP &&
	       (p->tcp_flags & (TORTIE_TCP_SYN | TORTIE_TCP_ACK)) == TORTIE_TCP_SYN;
}

TORTIE_INLINE void tortie_ct_key_fwd(const struct tortie_pkt *p, struct tortie_ct_key *k)
{
	int i;

	__builtin_memset(k, 0, sizeof(*k));
	k->ifindex = p->ifindex;
	k->hook = p->hook;
	k->family = p->family;
	k->proto = p->proto;
	k->sport = p->ct_sport;
	k->dport = p->ct_dport;
	for (i = 0; i < 4; i++) {
		k->src[i] = p->src[i];
		k->dst[i] = p->dst[i];
	}
}

TORTIE_INLINE void tortie_ct_key_rev(const struct tortie_pkt *p, struct tortie_ct_key *k)
{
	int i;

	__builtin_memset(k, 0, sizeof(*k));
	k->ifindex = p->ifindex;
	k->hook = p->hook ^ 1;
	k->family = p->family;
	k->proto = p->proto;
	k->sport = p->ct_dport;
	k->dport = p->ct_sport;
	for (i = 0; i < 4; i++) {
		k->src[i] = p->dst[i];
		k->dst[i] = p->src[i];
	}
}

TORTIE_INLINE __u64 tortie_ct_timeout(const struct tortie_pkt *p, const struct tortie_config *cfg)
{
	__u32 s = p->proto == TORTIE_P_TCP ? cfg->ct_timeout_tcp_s : cfg->ct_timeout_other_s;
	return (__u64)s * TORTIE_NSEC;
}

/* An ICMP error about a flow approved on this interface: the quoted packet went out through
 * the other hook in the flow's own direction, or through this hook as a reply. */
TORTIE_INLINE int tortie_ct_related(const struct tortie_pkt *p, __u64 now, __u64 timeout)
{
	struct tortie_ct_key k;
	struct tortie_ct_value *v;
	int i;

	__builtin_memset(&k, 0, sizeof(k));
	k.ifindex = p->ifindex;
	k.hook = p->hook ^ 1;
	k.family = p->family;
	k.proto = p->rel_proto;
	k.sport = p->rel_sport;
	k.dport = p->rel_dport;
	for (i = 0; i < 4; i++) {
		k.src[i] = p->rel_src[i];
		k.dst[i] = p->rel_dst[i];
	}
	v = bpf_map_lookup_elem(&tortie_ct, &k);
	if (v && now - v->last_seen < timeout)
		return 1;
	k.hook = p->hook;
	k.sport = p->rel_dport;
	k.dport = p->rel_sport;
	for (i = 0; i < 4; i++) {
		k.src[i] = p->rel_dst[i];
		k.dst[i] = p->rel_src[i];
	}
	v = bpf_map_lookup_elem(&tortie_ct, &k);
	return v && now - v->last_seen < timeout;
}

/* 1 when conntrack admits the packet (no policy needed). */
TORTIE_INLINE int tortie_ct_admit(const struct tortie_pkt *p, const struct tortie_config *cfg)
{
	struct tortie_ct_key k;
	struct tortie_ct_value *v;
	__u64 now, timeout;

	if (tortie_is_new_syn(p))
		return 0;
	now = bpf_ktime_get_ns();
	timeout = tortie_ct_timeout(p, cfg);
	tortie_ct_key_fwd(p, &k);
	v = bpf_map_lookup_elem(&tortie_ct, &k);
	if (v && now - v->last_seen < timeout) {
		v->last_seen = now;
		return 1;
	}
	if (p->has_rel) {
		__u32 s = p->rel_proto == TORTIE_P_TCP ? cfg->ct_timeout_tcp_s : cfg->ct_timeout_other_s;
		return tortie_ct_related(p, now, (__u64)s * TORTIE_NSEC);
	}
	if (!p->ct_reply_ok)
		return 0;
	tortie_ct_key_rev(p, &k);
	v = bpf_map_lookup_elem(&tortie_ct, &k);
	if (v && now - v->last_seen < timeout) {
		v->last_seen = now;
		return 1;
	}
	return 0;
}

TORTIE_INLINE void tortie_ct_approve(const struct tortie_pkt *p)
{
	struct tortie_ct_key k;
	struct tortie_ct_value v = {};

	tortie_ct_key_fwd(p, &k);
	v.last_seen = bpf_ktime_get_ns();
	bpf_map_update_elem(&tortie_ct, &k, &v, BPF_ANY);
}

TORTIE_INLINE void tortie_ct_forget(const struct tortie_pkt *p)
{
	struct tortie_ct_key k;

	tortie_ct_key_fwd(p, &k);
	bpf_map_delete_elem(&tortie_ct, &k);
}

TORTIE_INLINE void tortie_frag_key(const struct tortie_pkt *p, struct tortie_frag_key *k)
{
	int i;

	__builtin_memset(k, 0, sizeof(*k));
	k->ifindex = p->ifindex;
	k->hook = p->hook;
	k->family = p->family;
	k->proto = p->proto;
	k->id = p->frag_id;
	for (i = 0; i < 4; i++) {
		k->src[i] = p->src[i];
		k->dst[i] = p->dst[i];
	}
}

TORTIE_INLINE void tortie_frag_note(const struct tortie_pkt *p)
{
	struct tortie_frag_key k;
	struct tortie_frag_value v = {};

	tortie_frag_key(p, &k);
	v.last_seen = bpf_ktime_get_ns();
	bpf_map_update_elem(&tortie_frags, &k, &v, BPF_ANY);
}

/* A later fragment passes only behind an allowed first fragment (in-order arrival). */
TORTIE_INLINE int tortie_frag_admit(const struct tortie_pkt *p, const struct tortie_config *cfg)
{
	struct tortie_frag_key k;
	struct tortie_frag_value *v;
	__u64 now = bpf_ktime_get_ns();

	tortie_frag_key(p, &k);
	v = bpf_map_lookup_elem(&tortie_frags, &k);
	if (!v || now - v->last_seen >= (__u64)cfg->frag_timeout_s * TORTIE_NSEC)
		return 0;
	v->last_seen = now;
	return 1;
}

#endif /* TORTIE_CT_H */
