/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Set membership, Log counters, the allow/deny exits and the entry program's logic.
 * Needs TORTIE_PROG_HOOK, TORTIE_PROG_CHECK_E2H and TORTIE_PROG_HOST_TO_WORKLOAD (0/1) defined
 * by the program. */
#ifndef TORTIE_VERDICT_H
#define TORTIE_VERDICT_H

/* Membership of (addr, proto, port) in IP set (hi, lo): one full-length LPM lookup in the set
 * map of the packet's bank (p->bank, see tortie_prepare). Selector sets are stored with
 * proto = port = 0, named-port sets with the member's protocol and port (proto_port is
 * proto << 16 | port: BPF functions take at most five arguments).
 * Not inlined: a BPF-to-BPF call keeps each lookup site at a few instructions, which keeps
 * chunks small (code size, clang time) at the price of re-verifying the callee per site. */
static __noinline int tortie_in_set4(const struct tortie_pkt *p, __u32 hi, __u32 lo, __u32 addr,
				     __u32 proto_port)
{
	struct tortie_set_key_v4 k;
	__u32 bank = p->bank;
	void *sets = bpf_map_lookup_elem(&tortie_setbank_v4, &bank);

	if (!sets)
		return 0;
	k.prefixlen = TORTIE_SET_KEY_FIXED_BITS + 32;
	k.set_hi = bpf_htonl(hi);
	k.set_lo = bpf_htonl(lo);
	k.port = bpf_htons(proto_port & 0xffff);
	k.proto = proto_port >> 16;
	k.pad = 0;
	k.addr = bpf_htonl(addr);
	return bpf_map_lookup_elem(sets, &k) != 0;
}

static __noinline int tortie_in_set6(const struct tortie_pkt *p, __u32 hi, __u32 lo,
				     const __u32 *addr, __u32 proto_port)
{
	struct tortie_set_key_v6 k;
	__u32 bank = p->bank;
	void *sets = bpf_map_lookup_elem(&tortie_setbank_v6, &bank);
	int i;

	if (!sets)
		return 0;
	k.prefixlen = TORTIE_SET_KEY_FIXED_BITS + 128;
	k.set_hi = bpf_htonl(hi);
	k.set_lo = bpf_htonl(lo);
	k.port = bpf_htons(proto_port & 0xffff);
	k.proto = proto_port >> 16;
	k.pad = 0;
	for (i = 0; i < 4; i++)
		k.addr[i] = bpf_htonl(addr[i]);
	return bpf_map_lookup_elem(sets, &k) != 0;
}

/* A Log rule matched: count it (per rule id) and flag the packet; evaluation goes on. */
static __noinline void tortie_log_hit(struct tortie_pkt *p, __u64 rule_id)
{
	struct tortie_log_value *v, init = {};

	p->logged = 1;
	v = bpf_map_lookup_elem(&tortie_log, &rule_id);
	if (!v) {
		bpf_map_update_elem(&tortie_log, &rule_id, &init, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&tortie_log, &rule_id);
		if (!v)
			return;
	}
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, p->len);
}

/* Whether addr (p->src or p->dst) is one of this node's own IPs (the host set of maps.json). */
TORTIE_INLINE int tortie_is_host_ip(const struct tortie_pkt *p, const __u32 *addr,
				    const struct tortie_config *cfg)
{
	if (p->family == 4)
		return tortie_in_set4(p, cfg->host_set_hi, cfg->host_set_lo, addr[0], 0);
	return tortie_in_set6(p, cfg->host_set_hi, cfg->host_set_lo, addr, 0);
}

TORTIE_INLINE int tortie_is_host(const struct tortie_pkt *p, const __u32 *addr)
{
	struct tortie_config *cfg = tortie_cfg();

	return cfg && tortie_is_host_ip(p, addr, cfg);
}

/* Deny: DROP. (FelixConfiguration's Reject is rendered as a drop too; see check().) A denied
 * TCP SYN also forgets an older approval of the same tuple. */
TORTIE_INLINE int tortie_deny(struct __sk_buff *skb, struct tortie_pkt *p)
{
	if (tortie_is_new_syn(p))
		tortie_ct_forget(p);
	return TC_ACT_SHOT;
}

/* Allow: for a workload's egress, defaultEndpointToHostAction decides traffic to this node's own
 * IPs (Drop; Accept; Return = accept, as no host endpoint is programmed). Then the flow is
 * approved in conntrack, and a first fragment opens the way for the rest of its datagram. */
TORTIE_INLINE int tortie_allow(struct __sk_buff *skb, struct tortie_pkt *p)
{
	struct tortie_config *cfg = tortie_cfg();

	if (!cfg)
		return TC_ACT_SHOT;
	if (TORTIE_PROG_CHECK_E2H && cfg->endpoint_to_host == TORTIE_E2H_DROP &&
	    tortie_is_host_ip(p, p->dst, cfg))
		return tortie_deny(skb, p);
	tortie_ct_approve(p);
	if (p->frag == TORTIE_FRAG_FIRST)
		tortie_frag_note(p);
	return TC_ACT_OK;
}

/* tortie_prepare's "no verdict yet": not a TC_ACT_* value. */
#define TORTIE_RUN_POLICY 0x7f00

/* The entry program's work before the policy: parse, then fragments and conntrack. Returns the
 * verdict, or TORTIE_RUN_POLICY for a new flow (the caller tail-calls chunk 0 of the policy). */
TORTIE_INLINE int tortie_prepare(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct tortie_pkt *p = bpf_map_lookup_elem(&tortie_state, &zero);
	struct tortie_config *cfg = tortie_cfg();
	int rc;

	if (!p || !cfg)
		return TC_ACT_SHOT;
	rc = tortie_parse(skb, p);
	if (rc == TORTIE_PARSE_NOT_IP)
		return TC_ACT_OK;
	if (rc != TORTIE_PARSE_OK)
		return TC_ACT_SHOT;
	/* The dispatcher tags the packet with the bank in force; attached directly (the reference
	 * loader, BPF_PROG_TEST_RUN) a program uses bank 0. */
	p->bank = (skb->cb[0] & TORTIE_CB_BANK_MASK) == TORTIE_CB_BANK_MAGIC ? skb->cb[0] & 1 : 0;
	p->ifindex = skb->ifindex;
	p->hook = TORTIE_PROG_HOOK;
	p->resume = 0;
	p->logged = 0;
	if (p->frag == TORTIE_FRAG_LATER)
		return tortie_frag_admit(p, cfg) ? TC_ACT_OK : TC_ACT_SHOT;
	if (tortie_ct_admit(p, cfg)) {
		if (p->frag == TORTIE_FRAG_FIRST)
			tortie_frag_note(p);
		return TC_ACT_OK;
	}
	/* Host -> local workload is not policed (as Felix: its OUTPUT chain returns before any
	 * endpoint policy); approve it so the workload's replies pass its egress hook. */
	if (TORTIE_PROG_HOST_TO_WORKLOAD && tortie_is_host_ip(p, p->src, cfg))
		return tortie_allow(skb, p);
	return TORTIE_RUN_POLICY;
}

/* The entry program: tortie_prepare, then a new flow tail-calls chunk 0 of the policy. A failed
 * tail call (never expected) drops: fail closed. `prepare` is tortie_prepare itself (inlined)
 * or, in an object built with TORTIE_LINKED_ENTRY, the global function tortie_prepare_linked
 * compiled once per kind of program (entry_tc.bpf.c.j2) and linked in. */
#define TORTIE_ENTRY(prepare, skb, jump_map)                       \
	do {                                                       \
		int t_rc = prepare(skb);                           \
		if (t_rc != TORTIE_RUN_POLICY)                     \
			return t_rc;                               \
		bpf_tail_call((skb), (jump_map), 0);               \
		return TC_ACT_SHOT;                                \
	} while (0)

#endif /* TORTIE_VERDICT_H */
