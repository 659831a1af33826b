/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes, constants and small helpers every Tortie TC program uses.
 * Include order (always the same): tortie_common.h, tortie_maps.h (generated), then the
 * program's TORTIE_PROG_* defines, then tortie_parse.h, tortie_ct.h, tortie_verdict.h,
 * tortie_rules.h. */
#ifndef TORTIE_COMMON_H
#define TORTIE_COMMON_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TORTIE_INLINE static __always_inline

/* IP protocol numbers (not from <netinet/in.h>: no libc headers in BPF builds). */
#define TORTIE_P_ICMP 1
#define TORTIE_P_TCP 6
#define TORTIE_P_UDP 17
#define TORTIE_P_ICMPV6 58
#define TORTIE_P_SCTP 132
#define TORTIE_P_UDPLITE 136

/* IPv6 extension headers we walk (RFC 8200 §4; AH is RFC 4302). */
#define TORTIE_NH_HOPOPTS 0
#define TORTIE_NH_ROUTING 43
#define TORTIE_NH_FRAGMENT 44
#define TORTIE_NH_AH 51
#define TORTIE_NH_DSTOPTS 60
#define TORTIE_MAX_EXT_HDRS 8

#define TORTIE_TCP_SYN 0x02
#define TORTIE_TCP_ACK 0x10

#define TORTIE_FRAG_NONE 0
#define TORTIE_FRAG_FIRST 1
#define TORTIE_FRAG_LATER 2

#define TORTIE_PARSE_OK 0
#define TORTIE_PARSE_NOT_IP 1
#define TORTIE_PARSE_DROP 2

#define TORTIE_NSEC 1000000000ULL

#endif /* TORTIE_COMMON_H */
