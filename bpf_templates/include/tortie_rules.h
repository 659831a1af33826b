/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The vocabulary generated policy code is written in. The renderer emits nothing but these
 * macros with numeric arguments and labels it made itself, so no text from YAML reaches the C
 * code outside comments. Each test jumps to label l when the rule can no longer match (the
 * "_NE"/"_OUT" forms) or when one alternative of an ORed list matched (the "_IN"/"_EQ" forms,
 * jumping to the rule's "ok" label). `p` is the chunk's struct tortie_pkt pointer. */
#ifndef TORTIE_RULES_H
#define TORTIE_RULES_H

#define T_PORT_src p->sport
#define T_PORT_dst p->dport

#define T_PROLOGUE()                                                       \
	__u32 t_zero = 0;                                                  \
	struct tortie_pkt *p = bpf_map_lookup_elem(&tortie_state, &t_zero); \
	if (!p)                                                            \
		return TC_ACT_SHOT
#define T_EXITS()                         \
	t_allow: __attribute__((unused));  \
	return tortie_allow(skb, p);      \
	t_deny: __attribute__((unused));   \
	return tortie_deny(skb, p)

#define T_LABEL(l) l : __attribute__((unused));
#define T_GOTO(l) goto l
#define T_RESUME(id, l) if (p->resume == (id)) goto l
#define T_JUMP(id, chunk)                                   \
	do {                                                \
		p->resume = (id);                           \
		bpf_tail_call(skb, &tortie_jump, (chunk));  \
		return TC_ACT_SHOT;                         \
	} while (0)
#define T_ALLOW() goto t_allow
#define T_DENY() goto t_deny
#define T_LOG(hi, lo) tortie_log_hit(p, ((__u64)(hi) << 32) | (__u64)(lo))

#define T_FAMILY_NE(v, l) if (p->family != (v)) goto l
#define T_PROTO_NE(v, l) if (p->proto != (v)) goto l
#define T_PROTO_EQ(v, l) if (p->proto == (v)) goto l
#define T_ICMP_NE(t, l) if (!p->has_icmp || p->icmp_type != (t)) goto l
#define T_ICMP_CODE_NE(t, c, l) \
	if (!p->has_icmp || p->icmp_type != (t) || p->icmp_code != (c)) goto l
#define T_ICMP_EQ(t, l) if (p->has_icmp && p->icmp_type == (t)) goto l
#define T_ICMP_CODE_EQ(t, c, l) \
	if (p->has_icmp && p->icmp_type == (t) && p->icmp_code == (c)) goto l

#define T_NET4_IN(side, a, m, l) if ((p->side[0] & (m)) == (a)) goto l
#define T_NET6_IN(side, a0, a1, a2, a3, m0, m1, m2, m3, l)                          \
	if ((p->side[0] & (m0)) == (a0) && (p->side[1] & (m1)) == (a1) &&             \
	    (p->side[2] & (m2)) == (a2) && (p->side[3] & (m3)) == (a3))               \
	goto l
#define T_SET4_OUT(side, hi, lo, l) if (!tortie_in_set4(p, (hi), (lo), p->side[0], 0)) goto l
#define T_SET4_IN(side, hi, lo, l) if (tortie_in_set4(p, (hi), (lo), p->side[0], 0)) goto l
#define T_SET6_OUT(side, hi, lo, l) if (!tortie_in_set6(p, (hi), (lo), p->side, 0)) goto l
#define T_SET6_IN(side, hi, lo, l) if (tortie_in_set6(p, (hi), (lo), p->side, 0)) goto l
#define T_PROTO_PORT(side) (((__u32)p->proto << 16) | T_PORT_##side)

#define T_HOST_DST_IN(l) if (tortie_is_host(p, p->dst)) goto l
#define T_HOST_SRC_IN(l) if (tortie_is_host(p, p->src)) goto l

#define T_NO_PORTS(l) if (!p->has_ports) goto l
#define T_PORT_EQ(side, v, l) if (T_PORT_##side == (v)) goto l
#define T_PORT_IN(side, lo, hi, l) if (T_PORT_##side >= (lo) && T_PORT_##side <= (hi)) goto l
#define T_NPORT4_IN(side, hi, lo, l) \
	if (tortie_in_set4(p, (hi), (lo), p->side[0], T_PROTO_PORT(side))) goto l
#define T_NPORT6_IN(side, hi, lo, l) \
	if (tortie_in_set6(p, (hi), (lo), p->side, T_PROTO_PORT(side))) goto l

#endif /* TORTIE_RULES_H */
