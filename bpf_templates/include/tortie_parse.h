/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing into struct tortie_pkt (the per-CPU scratch state).
 *
 * Every header is copied with bpf_skb_load_bytes(), which checks the offset and length against
 * the whole skb (linear and paged parts): a truncated header makes the copy fail, and a packet
 * we cannot parse is dropped (TORTIE_PARSE_DROP). Non-IP frames (ARP, ...) pass untouched.
 *
 * - IPv4: IHL < 5, or a total length shorter than the header, is malformed. Options are skipped.
 * - IPv6: hop-by-hop, routing, destination-options, fragment and AH headers are walked, at most
 *   TORTIE_MAX_EXT_HDRS of them; a chain longer than that is dropped. Any other next-header
 *   value is taken as the upper-layer protocol (ESP, no-next-header 59, ... have no ports).
 * - Fragments: the first fragment (offset 0) is parsed like any packet. Later fragments carry
 *   no transport header: they are marked TORTIE_FRAG_LATER, get no ports, and are admitted only
 *   if the first fragment of the same datagram was allowed on the same hook (tortie_frags).
 * - Transport: ports come from TCP (20-byte header needed, flags are read), UDP, UDP-Lite
 *   (8 bytes) and SCTP (12-byte common header); ICMP/ICMPv6 need their 8-byte header. A packet
 *   of one of these protocols that is too short for its header is dropped.
 */
#ifndef TORTIE_PARSE_H
#define TORTIE_PARSE_H

TORTIE_INLINE __u32 tortie_word(const __u8 *b)
{
	return ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
}

TORTIE_INLINE void tortie_ct_ports(struct tortie_pkt *p, __u16 echo_id)
{
	/* Conntrack view of the ports. ICMP echo: request (id, 0), reply (0, id), so a reply is
	 * the reverse tuple of its request; only replies may use a reverse entry. Other ICMP
	 * types: (type << 8 | code, 0xffff), never reply-capable. */
	p->ct_sport = p->sport;
	p->ct_dport = p->dport;
	p->ct_reply_ok = 1;
	if (!p->has_icmp)
		return;
	if ((p->proto == TORTIE_P_ICMP && p->icmp_type == 8) ||
	    (p->proto == TORTIE_P_ICMPV6 && p->icmp_type == 128)) {
		p->ct_sport = echo_id;
		p->ct_dport = 0;
		p->ct_reply_ok = 0;
	} else if ((p->proto == TORTIE_P_ICMP && p->icmp_type == 0) ||
		   (p->proto == TORTIE_P_ICMPV6 && p->icmp_type == 129)) {
		p->ct_sport = 0;
		p->ct_dport = echo_id;
	} else {
		p->ct_sport = ((__u16)p->icmp_type << 8) | p->icmp_code;
		p->ct_dport = 0xffff;
		p->ct_reply_ok = 0;
	}
}

/* ICMP errors (v4: unreachable, time exceeded, parameter problem; v6: 1-4) quote the packet
 * they report. Its tuple goes to p->rel_* so conntrack can admit the error as RELATED to an
 * approved flow. A quote we cannot read leaves has_rel = 0: the error then meets policy. */
TORTIE_INLINE int tortie_is_icmp_error(const struct tortie_pkt *p)
{
	if (p->proto == TORTIE_P_ICMP)
		return p->icmp_type == 3 || p->icmp_type == 11 || p->icmp_type == 12;
	return p->proto == TORTIE_P_ICMPV6 && p->icmp_type >= 1 && p->icmp_type <= 4;
}

TORTIE_INLINE void tortie_parse_related(struct __sk_buff *skb, struct tortie_pkt *p, __u32 off)
{
	__u8 h[40];
	__u8 l4[8];
	__u32 ihl;
	int i;

	p->has_rel = 0;
	if (p->family == 4) {
		if (bpf_skb_load_bytes(skb, off, h, 20) || (h[0] >> 4) != 4)
			return;
		ihl = (h[0] & 0x0f) * 4;
		if (ihl < 20 || (((__u32)h[6] << 8 | h[7]) & 0x1fff))
			return;
		p->rel_proto = h[9];
		p->rel_src[0] = tortie_word(&h[12]);
		p->rel_dst[0] = tortie_word(&h[16]);
		for (i = 1; i < 4; i++)
			p->rel_src[i] = p->rel_dst[i] = 0;
		off += ihl;
	} else {
		if (bpf_skb_load_bytes(skb, off, h, 40) || (h[0] >> 4) != 6)
			return;
		p->rel_proto = h[6]; /* a quoted extension header is not walked: no RELATED */
		for (i = 0; i < 4; i++) {
			p->rel_src[i] = tortie_word(&h[8 + 4 * i]);
			p->rel_dst[i] = tortie_word(&h[24 + 4 * i]);
		}
		off += 40;
	}
	if (bpf_skb_load_bytes(skb, off, l4, 8))
		return;
	switch (p->rel_proto) {
	case TORTIE_P_TCP:
	case TORTIE_P_UDP:
	case TORTIE_P_UDPLITE:
	case TORTIE_P_SCTP:
		p->rel_sport = ((__u16)l4[0] << 8) | l4[1];
		p->rel_dport = ((__u16)l4[2] << 8) | l4[3];
		break;
	case TORTIE_P_ICMP:
	case TORTIE_P_ICMPV6:
		/* Only echo exchanges are flows conntrack can tell apart (see tortie_ct_ports). */
		if (l4[0] == 8 || l4[0] == 128) {
			p->rel_sport = ((__u16)l4[4] << 8) | l4[5];
			p->rel_dport = 0;
		} else if (l4[0] == 0 || l4[0] == 129) {
			p->rel_sport = 0;
			p->rel_dport = ((__u16)l4[4] << 8) | l4[5];
		} else {
			return;
		}
		break;
	default:
		p->rel_sport = p->rel_dport = 0;
		break;
	}
	p->has_rel = 1;
}

TORTIE_INLINE int tortie_parse_l4(struct __sk_buff *skb, struct tortie_pkt *p, __u32 off)
{
	__u8 b[20];
	__u16 echo_id = 0;

	p->sport = 0;
	p->dport = 0;
	p->has_ports = 0;
	p->has_icmp = 0;
	p->icmp_type = 0;
	p->icmp_code = 0;
	p->tcp_flags = 0;
	p->has_rel = 0;
	if (p->frag == TORTIE_FRAG_LATER) {
		tortie_ct_ports(p, 0);
		return TORTIE_PARSE_OK;
	}
	switch (p->proto) {
	case TORTIE_P_TCP:
		if (bpf_skb_load_bytes(skb, off, b, 20))
			return TORTIE_PARSE_DROP;
		p->tcp_flags = b[13];
		p->has_ports = 1;
		break;
	case TORTIE_P_UDP:
	case TORTIE_P_UDPLITE:
		if (bpf_skb_load_bytes(skb, off, b, 8))
			return TORTIE_PARSE_DROP;
		p->has_ports = 1;
		break;
	case TORTIE_P_SCTP:
		if (bpf_skb_load_bytes(skb, off, b, 12))
			return TORTIE_PARSE_DROP;
		p->has_ports = 1;
		break;
	case TORTIE_P_ICMP:
	case TORTIE_P_ICMPV6:
		if (bpf_skb_load_bytes(skb, off, b, 8))
			return TORTIE_PARSE_DROP;
		p->has_icmp = 1;
		p->icmp_type = b[0];
		p->icmp_code = b[1];
		echo_id = ((__u16)b[4] << 8) | b[5];
		break;
	default:
		break;
	}
	if (p->has_ports) {
		p->sport = ((__u16)b[0] << 8) | b[1];
		p->dport = ((__u16)b[2] << 8) | b[3];
	}
	tortie_ct_ports(p, echo_id);
	p->has_rel = 0;
	if (p->has_icmp && tortie_is_icmp_error(p))
		tortie_parse_related(skb, p, off + 8);
	return TORTIE_PARSE_OK;
}

TORTIE_INLINE int tortie_parse_v4(struct __sk_buff *skb, struct tortie_pkt *p)
{
	__u8 h[20];
	__u32 ihl, frag;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, h, 20))
		return TORTIE_PARSE_DROP;
	ihl = (h[0] & 0x0f) * 4;
	if ((h[0] >> 4) != 4 || ihl < 20 || (((__u32)h[2] << 8) | h[3]) < ihl)
		return TORTIE_PARSE_DROP;
	p->family = 4;
	p->proto = h[9];
	p->src[0] = ((__u32)h[12] << 24) | ((__u32)h[13] << 16) | ((__u32)h[14] << 8) | h[15];
	p->dst[0] = ((__u32)h[16] << 24) | ((__u32)h[17] << 16) | ((__u32)h[18] << 8) | h[19];
	p->src[1] = p->src[2] = p->src[3] = 0;
	p->dst[1] = p->dst[2] = p->dst[3] = 0;
	frag = ((__u32)h[6] << 8) | h[7];
	p->frag_id = ((__u32)h[4] << 8) | h[5];
	if (frag & 0x1fff)
		p->frag = TORTIE_FRAG_LATER;
	else if (frag & 0x2000)
		p->frag = TORTIE_FRAG_FIRST;
	else
		p->frag = TORTIE_FRAG_NONE;
	return tortie_parse_l4(skb, p, ETH_HLEN + ihl);
}

TORTIE_INLINE int tortie_parse_v6(struct __sk_buff *skb, struct tortie_pkt *p)
{
	__u8 h[40];
	__u8 e[8];
	__u32 off = ETH_HLEN + 40;
	__u8 nh;
	int i;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, h, 40))
		return TORTIE_PARSE_DROP;
	if ((h[0] >> 4) != 6)
		return TORTIE_PARSE_DROP;
	p->family = 6;
	for (i = 0; i < 4; i++) {
		p->src[i] = tortie_word(&h[8 + 4 * i]);
		p->dst[i] = tortie_word(&h[24 + 4 * i]);
	}
	p->frag = TORTIE_FRAG_NONE;
	p->frag_id = 0;
	nh = h[6];
#pragma unroll
	for (i = 0; i < TORTIE_MAX_EXT_HDRS; i++) {
		if (nh != TORTIE_NH_HOPOPTS && nh != TORTIE_NH_ROUTING && nh != TORTIE_NH_DSTOPTS &&
		    nh != TORTIE_NH_FRAGMENT && nh != TORTIE_NH_AH)
			break;
		if (bpf_skb_load_bytes(skb, off, e, 8))
			return TORTIE_PARSE_DROP;
		if (nh == TORTIE_NH_FRAGMENT) {
			__u32 fo = ((__u32)e[2] << 8) | e[3];
			p->frag_id = tortie_word(&e[4]);
			off += 8;
			if (fo & 0xfff8) {
				/* A later fragment: what follows is payload, not a header. */
				p->frag = TORTIE_FRAG_LATER;
				p->proto = e[0];
				return tortie_parse_l4(skb, p, off);
			}
			if (fo & 1)
				p->frag = TORTIE_FRAG_FIRST;
		} else if (nh == TORTIE_NH_AH) {
			off += ((__u32)e[1] + 2) * 4;
		} else {
			off += ((__u32)e[1] + 1) * 8;
		}
		nh = e[0];
	}
	if (nh == TORTIE_NH_HOPOPTS || nh == TORTIE_NH_ROUTING || nh == TORTIE_NH_DSTOPTS ||
	    nh == TORTIE_NH_FRAGMENT || nh == TORTIE_NH_AH)
		return TORTIE_PARSE_DROP; /* longer chain than we walk: conservative */
	p->proto = nh;
	return tortie_parse_l4(skb, p, off);
}

TORTIE_INLINE int tortie_parse(struct __sk_buff *skb, struct tortie_pkt *p)
{
	p->len = skb->len;
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return tortie_parse_v4(skb, p);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return tortie_parse_v6(skb, p);
	return TORTIE_PARSE_NOT_IP;
}

#endif /* TORTIE_PARSE_H */
