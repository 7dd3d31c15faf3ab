// SPDX-License-Identifier: GPL-2.0
/*
 * swsim XFRM device operations: accept what an mlx5 ConnectX accepts (see the
 * project's notes, "mlx5 as the reference device"), refuse the rest with an
 * extended-ack text of the same kind, and keep the "hardware" SA and policy tables.
 */
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <linux/pfkeyv2.h>
#include <net/ipv6.h>
#include <crypto/aead.h>
#include "swsim.h"

static struct swsim_priv *priv_of(struct net_device *dev)
{
	return netdev_priv(dev);
}

/*
 * mlx5e_xfrm_validate_state (Linux 6.12), check for check and in its order, with its
 * messages: a ConnectX answers an SA this way. Capabilities a given card may lack are module
 * parameters (esn, tunnel; ESP-in-UDP is one swsim lacks: no UDP framing in its datapath).
 */
static int swsim_check_state(struct xfrm_state *x, struct netlink_ext_ack *extack)
{
	bool packet = x->xso.type == XFRM_DEV_OFFLOAD_PACKET;
	bool inbound = x->xso.dir == XFRM_DEV_OFFLOAD_IN;

	if (x->props.aalgo != SADB_AALG_NONE) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload authenticated xfrm states");
		return -EINVAL;
	}
	if (x->props.ealgo != SADB_X_EALG_AES_GCM_ICV16) {
		NL_SET_ERR_MSG_MOD(extack, "Only AES-GCM-ICV16 xfrm state may be offloaded");
		return -EINVAL;
	}
	if (x->props.calgo != SADB_X_CALG_NONE) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload compressed xfrm states");
		return -EINVAL;
	}
	if ((x->props.flags & XFRM_STATE_ESN) && !swsim_cap_esn) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload ESN xfrm states");
		return -EINVAL;
	}
	if (x->props.family != AF_INET && x->props.family != AF_INET6) {
		NL_SET_ERR_MSG_MOD(extack, "Only IPv4/6 xfrm states may be offloaded");
		return -EINVAL;
	}
	if (x->id.proto != IPPROTO_ESP) {
		NL_SET_ERR_MSG_MOD(extack, "Only ESP xfrm state may be offloaded");
		return -EINVAL;
	}
	if (x->encap) {
		if (!swsim_cap_espinudp) {
			NL_SET_ERR_MSG_MOD(extack, "Encapsulation is not supported");
			return -EINVAL;
		}
		if (x->encap->encap_type != UDP_ENCAP_ESPINUDP) {
			NL_SET_ERR_MSG_MOD(extack, "Encapsulation other than UDP is not supported");
			return -EINVAL;
		}
		if (!packet) {
			NL_SET_ERR_MSG_MOD(extack, "Encapsulation is supported in packet offload mode only");
			return -EINVAL;
		}
		if (x->props.mode != XFRM_MODE_TRANSPORT) {
			NL_SET_ERR_MSG_MOD(extack, "Encapsulation is supported in transport mode only");
			return -EINVAL;
		}
	}
	if (!x->aead) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload xfrm states without aead");
		return -EINVAL;
	}
	if (x->aead->alg_icv_len != 128) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload xfrm states with AEAD ICV length other than 128bit");
		return -EINVAL;
	}
	if (x->aead->alg_key_len != 128 + 32 && x->aead->alg_key_len != 256 + 32) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload xfrm states with AEAD key length other than 128/256 bit");
		return -EINVAL;
	}
	if (x->tfcpad) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload xfrm states with tfc padding");
		return -EINVAL;
	}
	if (!x->geniv) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload xfrm states without geniv");
		return -EINVAL;
	}
	if (strcmp(x->geniv, "seqiv")) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload xfrm states with geniv other than seqiv");
		return -EINVAL;
	}
	if (x->sel.proto != IPPROTO_IP && x->sel.proto != IPPROTO_UDP && x->sel.proto != IPPROTO_TCP) {
		NL_SET_ERR_MSG_MOD(extack, "Device does not support upper protocol other than TCP/UDP");
		return -EINVAL;
	}
	if (x->props.mode != XFRM_MODE_TRANSPORT && x->props.mode != XFRM_MODE_TUNNEL) {
		NL_SET_ERR_MSG_MOD(extack, "Only transport and tunnel xfrm states may be offloaded");
		return -EINVAL;
	}
	/* no inner/outer family check: mlx5 (6.12 up to 6.19) has none, and takes cross-family
	 * tunnels that it cannot carry (see swsim_esp_decap) */
	if (!packet)
		return 0;	/* crypto offload: the kernel keeps policies, lifetimes and anti-replay */
	if (x->props.mode == XFRM_MODE_TUNNEL && !swsim_cap_tunnel) {
		NL_SET_ERR_MSG_MOD(extack, "Packet offload is not supported for tunnel mode");
		return -EINVAL;
	}
	/* only an inbound SA with replay_esn is checked; an old-style replay_window never is */
	if (x->replay_esn && inbound && x->replay_esn->replay_window != 32 && x->replay_esn->replay_window != 64 &&
	    x->replay_esn->replay_window != 128 && x->replay_esn->replay_window != 256) {
		NL_SET_ERR_MSG_MOD(extack, "Unsupported replay window size");
		return -EINVAL;
	}
	if (!x->props.reqid) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload without reqid");
		return -EINVAL;
	}
	if (x->lft.soft_byte_limit >= x->lft.hard_byte_limit && x->lft.hard_byte_limit != XFRM_INF) {
		NL_SET_ERR_MSG_MOD(extack, "Hard byte limit must be greater than soft one");
		return -EINVAL;
	}
	if (!x->lft.soft_byte_limit || !x->lft.hard_byte_limit) {
		NL_SET_ERR_MSG_MOD(extack, "Soft/hard byte limits can't be 0");
		return -EINVAL;
	}
	if (x->lft.soft_packet_limit >= x->lft.hard_packet_limit && x->lft.hard_packet_limit != XFRM_INF) {
		NL_SET_ERR_MSG_MOD(extack, "Hard packet limit must be greater than soft one");
		return -EINVAL;
	}
	if (!x->lft.soft_packet_limit || !x->lft.hard_packet_limit) {
		NL_SET_ERR_MSG_MOD(extack, "Soft/hard packet limits can't be 0");
		return -EINVAL;
	}
	return 0;
}

/*
 * ipsec_fs.c tx_add_rule (6.12, packet offload): the TX SA rule matches the reqid (register
 * c4) and the selector's upper protocol and ports, no address and no SPI, and is added with
 * FLOW_ACT_NO_APPEND; a ConnectX has the duplicate-match capability, so a second rule of the
 * same match fails with EEXIST and mlx5e_xfrm_add_state's weak "Device failed to offload this
 * state". A device holds one packet-offloaded OUT SA per reqid and upper protocol: a rekey's
 * new one is refused while the old one is there.
 */
static bool swsim_same_tx_rule(const struct xfrm_state *a, const struct xfrm_state *b)
{
	return a->props.reqid == b->props.reqid && a->sel.proto == b->sel.proto &&
	       (a->sel.sport & a->sel.sport_mask) == (b->sel.sport & b->sel.sport_mask) &&
	       (a->sel.dport & a->sel.dport_mask) == (b->sel.dport & b->sel.dport_mask);
}

static int swsim_state_add(struct xfrm_state *x, struct netlink_ext_ack *extack)
{
	struct swsim_priv *p = priv_of(x->xso.dev);
	struct swsim_sa *sa, *other;
	int err;

	/*
	 * A larval state the kernel makes when an offloaded OUT policy finds no SA (atomic
	 * context, no algorithms yet): accepted unchecked and holding nothing, as mlx5 does, so
	 * the ACQUIRE reaches the IKE daemon. Refused, the packet would be dropped unasked.
	 */
	if (x->xso.flags & XFRM_DEV_OFFLOAD_FLAG_ACQ)
		return 0;
	err = swsim_check_state(x, extack);
	if (err)
		return err;
	sa = kzalloc(sizeof(*sa), GFP_KERNEL);
	if (!sa)
		return -ENOMEM;
	sa->aead = crypto_alloc_aead("rfc4106(gcm(aes))", 0, CRYPTO_ALG_ASYNC);
	if (IS_ERR(sa->aead)) {
		err = PTR_ERR(sa->aead);
		NL_SET_ERR_MSG_MOD(extack, "Device has no AES-GCM engine (rfc4106(gcm(aes)) unavailable)");
		goto free;
	}
	err = crypto_aead_setkey(sa->aead, x->aead->alg_key, (x->aead->alg_key_len + 7) / 8) ?:
	      crypto_aead_setauthsize(sa->aead, SWSIM_ICV_LEN);
	if (err) {
		NL_SET_ERR_MSG_MOD(extack, "Device rejected the AES-GCM key");
		goto free_aead;
	}
	sa->x = x;
	sa->inbound = x->xso.dir == XFRM_DEV_OFFLOAD_IN;
	sa->crypto = x->xso.type == XFRM_DEV_OFFLOAD_CRYPTO;
	sa->esn = !!(x->props.flags & XFRM_STATE_ESN);
	if (x->replay_esn) {
		sa->oseq = ((u64)x->replay_esn->oseq_hi << 32) | x->replay_esn->oseq;
		sa->top = ((u64)x->replay_esn->seq_hi << 32) | x->replay_esn->seq;
		sa->window = x->replay_esn->replay_window;
	} else {
		sa->oseq = x->replay.oseq;
		sa->top = x->replay.seq;
		sa->window = x->props.replay_window;
	}
	/* mlx5 programs anti-replay for ESN SAs only (mlx5e_ipsec_build_accel_xfrm_attrs): a
	 * packet-offloaded SA without ESN takes whatever sequence number arrives */
	sa->replay = sa->esn || sa->crypto;
	/* continue from the kernel's replay state: everything up to top counts as seen */
	if (sa->top)
		bitmap_fill(sa->bitmap, SWSIM_MAX_WINDOW);
	spin_lock_bh(&p->lock);
	if (p->nsa >= swsim_max_sa) {
		spin_unlock_bh(&p->lock);
		NL_SET_ERR_MSG_MOD(extack, "Device SA table is full (swsim max_sa)");
		err = -ENOSPC;
		goto free_aead;
	}
	if (!sa->inbound && !sa->crypto) {
		list_for_each_entry(other, &p->sas, list) {
			if (other->inbound || other->crypto || !swsim_same_tx_rule(other->x, x))
				continue;
			spin_unlock_bh(&p->lock);
			NL_SET_ERR_MSG_WEAK_MOD(extack, "Device failed to offload this state");
			err = -EEXIST;
			goto free_aead;
		}
	}
	list_add(&sa->list, &p->sas);	/* newest first: it wins lookups by reqid */
	p->nsa++;
	spin_unlock_bh(&p->lock);
	x->xso.offload_handle = (unsigned long)sa;
	return 0;
free_aead:
	crypto_free_aead(sa->aead);
free:
	kfree(sa);
	return err;
}

static void swsim_state_delete(struct xfrm_state *x)
{
	struct swsim_priv *p = priv_of(x->xso.dev);
	struct swsim_sa *sa = (struct swsim_sa *)x->xso.offload_handle;

	if (!sa)
		return;
	spin_lock_bh(&p->lock);
	list_del_init(&sa->list);
	p->nsa--;
	spin_unlock_bh(&p->lock);
}

static void swsim_state_free(struct xfrm_state *x)
{
	struct swsim_sa *sa = (struct swsim_sa *)x->xso.offload_handle;

	if (!sa)
		return;
	x->xso.offload_handle = 0;
	crypto_free_aead(sa->aead);
	kfree_sensitive(sa);
}

/*
 * mlx5e_ipsec_offload_ok: IPv4 options and IPv6 extension headers are not offloadable; in
 * packet offload the kernel then drops the packet (xfrm_output). The header is read as the
 * SA's outer family says, whatever the packet is (so a cross-family tunnel reads it wrong).
 */
static bool swsim_offload_ok(struct sk_buff *skb, struct xfrm_state *x)
{
	if (x->props.family == AF_INET)
		return ip_hdr(skb)->ihl <= 5;
	return !ipv6_ext_hdr(ipv6_hdr(skb)->nexthdr);
}

static void swsim_advance_esn(struct xfrm_state *x)
{
	/*
	 * packet offload: the device tracks the high sequence bits itself (swsim_sa.top);
	 * crypto offload: it reads them from the kernel's replay state at each packet
	 */
}

/* GETSA and dumps ask for the device's counters (kernel >= 6.4). */
static void swsim_update_stats(struct xfrm_state *x)
{
	struct swsim_priv *p = priv_of(x->xso.dev);
	struct swsim_sa *sa = (struct swsim_sa *)x->xso.offload_handle;

	if (!sa || sa->crypto)
		return;		/* crypto offload: the kernel counts and keeps the replay state */
	spin_lock_bh(&p->lock);
	x->curlft.bytes = sa->bytes;
	x->curlft.packets = sa->packets;
	x->stats.replay = sa->replay_fail;
	x->stats.integrity_failed = sa->integrity_fail;
	/* report the sequence numbers the device reached, so a move back to software continues */
	if (x->replay_esn) {
		if (!sa->inbound) {
			x->replay_esn->oseq = lower_32_bits(sa->oseq);
			x->replay_esn->oseq_hi = upper_32_bits(sa->oseq);
		} else {
			x->replay_esn->seq = lower_32_bits(sa->top);
			x->replay_esn->seq_hi = upper_32_bits(sa->top);
		}
	} else if (!sa->inbound) {
		x->replay.oseq = lower_32_bits(sa->oseq);
	} else {
		x->replay.seq = lower_32_bits(sa->top);
	}
	spin_unlock_bh(&p->lock);
}

static int swsim_policy_add(struct xfrm_policy *xp, struct netlink_ext_ack *extack)
{
	struct swsim_priv *p = priv_of(xp->xdo.dev);
	struct swsim_pol *pol;

	const struct xfrm_selector *sel = &xp->selector;

	/* mlx5e_xfrm_validate_policy (6.12), in its order and words */
	if (xp->type != XFRM_POLICY_TYPE_MAIN) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload non-main policy types");
		return -EINVAL;
	}
	if (xp->xfrm_nr > 1) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload more than one template");
		return -EINVAL;
	}
	if (xp->xdo.dir != XFRM_DEV_OFFLOAD_IN && xp->xdo.dir != XFRM_DEV_OFFLOAD_OUT) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload forward policy");
		return -EINVAL;
	}
	/* xfrm_vec[0] is read whether or not there is a template: a 0-template policy is judged too */
	if (!xp->xfrm_vec[0].reqid && sel->proto == IPPROTO_IP && ipv6_addr_any(&sel->saddr.in6) &&
	    ipv6_addr_any(&sel->daddr.in6)) {
		NL_SET_ERR_MSG_MOD(extack, "Unsupported policy with reqid 0 without at least one of upper protocol or ip addr(s) different than 0");
		return -EINVAL;
	}
	if (sel->proto != IPPROTO_IP && sel->proto != IPPROTO_UDP && sel->proto != IPPROTO_TCP) {
		NL_SET_ERR_MSG_MOD(extack, "Device does not support upper protocol other than TCP/UDP");
		return -EINVAL;
	}
	if (xp->priority) {
		if (!swsim_cap_prio) {
			NL_SET_ERR_MSG_MOD(extack, "Device does not support policy priority");
			return -EINVAL;
		}
		if (xp->priority == U32_MAX) {
			NL_SET_ERR_MSG_MOD(extack, "Device does not support requested policy priority");
			return -EINVAL;
		}
	}
	pol = kzalloc(sizeof(*pol), GFP_KERNEL);
	if (!pol)
		return -ENOMEM;
	pol->xp = xp;
	spin_lock_bh(&p->lock);
	list_add_tail(&pol->list, &p->pols);
	spin_unlock_bh(&p->lock);
	xp->xdo.offload_handle = (unsigned long)pol;
	return 0;
}

static void swsim_policy_delete(struct xfrm_policy *xp)
{
	struct swsim_priv *p = priv_of(xp->xdo.dev);
	struct swsim_pol *pol = (struct swsim_pol *)xp->xdo.offload_handle;

	if (!pol)
		return;
	spin_lock_bh(&p->lock);
	list_del_init(&pol->list);
	spin_unlock_bh(&p->lock);
}

static void swsim_policy_free(struct xfrm_policy *xp)
{
	kfree((void *)xp->xdo.offload_handle);
	xp->xdo.offload_handle = 0;
}

const struct xfrmdev_ops swsim_xfrmdev_ops = {
	.xdo_dev_state_add = swsim_state_add,
	.xdo_dev_state_delete = swsim_state_delete,
	.xdo_dev_state_free = swsim_state_free,
	.xdo_dev_offload_ok = swsim_offload_ok,
	.xdo_dev_state_advance_esn = swsim_advance_esn,
	.xdo_dev_state_update_stats = swsim_update_stats,
	.xdo_dev_policy_add = swsim_policy_add,
	.xdo_dev_policy_delete = swsim_policy_delete,
	.xdo_dev_policy_free = swsim_policy_free,
};

/* The flow of an outgoing frame (Ethernet header at skb->data), as a selector sees it. */
struct swsim_flow {
	int family;
	xfrm_address_t saddr, daddr;
	u8 proto;
	__be16 sport, dport;	/* ICMP: type and code, as the kernel's selector match uses them */
};

static bool swsim_flow(struct sk_buff *skb, struct swsim_flow *f)
{
	unsigned int off = ETH_HLEN;
	u8 _v, *v = skb_header_pointer(skb, off, 1, &_v);

	/*
	 * The IP version, not the Ethernet type: a forwarded tunnel-mode packet comes
	 * from xfrm_dev_direct_output with whatever L2 bytes were in its headroom.
	 */
	memset(f, 0, sizeof(*f));
	if (!v)
		return false;
	if (*v >> 4 == 4) {
		struct iphdr _ih, *ih = skb_header_pointer(skb, off, sizeof(_ih), &_ih);

		if (!ih || ih->ihl < 5)
			return false;
		f->saddr.a4 = ih->saddr;
		f->daddr.a4 = ih->daddr;
		f->proto = ih->protocol;
		off += ih->ihl * 4;
		f->family = AF_INET;
	} else if (*v >> 4 == 6) {
		struct ipv6hdr _ih, *ih = skb_header_pointer(skb, off, sizeof(_ih), &_ih);

		if (!ih)
			return false;
		f->saddr.in6 = ih->saddr;
		f->daddr.in6 = ih->daddr;
		f->proto = ih->nexthdr;	/* extension headers: matched as their own protocol */
		off += sizeof(*ih);
		f->family = AF_INET6;
	} else {
		return false;
	}
	if (f->proto == IPPROTO_TCP || f->proto == IPPROTO_UDP) {
		__be16 _ports[2], *ports = skb_header_pointer(skb, off, sizeof(_ports), _ports);

		if (ports) {
			f->sport = ports[0];
			f->dport = ports[1];
		}
	} else if (f->proto == IPPROTO_ICMP || f->proto == IPPROTO_ICMPV6) {
		u8 _tc[2], *tc = skb_header_pointer(skb, off, sizeof(_tc), _tc);

		if (tc) {
			f->sport = htons(tc[0]);
			f->dport = htons(tc[1]);
		}
	}
	return true;
}

/*
 * A selector address as the device's steering matches it. mlx5 of 6.12 (ipsec_fs.c
 * setup_fte_addr4/6) skips a zero address and matches any other exactly, all-ones mask, the
 * prefix length ignored: 10.1.0.0/24 matches 10.1.0.0 alone. 6.15 ("net/mlx5e: Properly match
 * IPsec subnet addresses") masks by the prefix.
 */
static bool swsim_addr_match(const xfrm_address_t *a, const xfrm_address_t *sel, u8 prefixlen, int family)
{
	if (swsim_steer < 615) {
		if (family == AF_INET)
			return !sel->a4 || a->a4 == sel->a4;
		return ipv6_addr_any(&sel->in6) || ipv6_addr_equal(&a->in6, &sel->in6);
	}
	return family == AF_INET ? addr4_match(a->a4, sel->a4, prefixlen) : addr_match(a, sel, prefixlen);
}

static bool swsim_sel_match(const struct xfrm_selector *sel, const struct swsim_flow *f, int ifindex)
{
	bool addrs = swsim_addr_match(&f->daddr, &sel->daddr, sel->prefixlen_d, f->family) &&
		     swsim_addr_match(&f->saddr, &sel->saddr, sel->prefixlen_s, f->family);

	return addrs && !((f->dport ^ sel->dport) & sel->dport_mask) &&
	       !((f->sport ^ sel->sport) & sel->sport_mask) &&
	       (f->proto == sel->proto || !sel->proto) && (sel->ifindex == ifindex || !sel->ifindex);
}

/*
 * Transmit side of the hardware: match the frame against the offloaded OUT
 * policies (lowest priority value wins, as flow-steering priorities do), then
 * the one outbound SA with the template's reqid. NULL: send as is (a bypass, or not an IP
 * frame); SWSIM_NO_POLICY: as is, no policy matched. ERR_PTR: a policy without SA or a block: drop.
 * Called with p->lock held.
 */
struct swsim_sa *swsim_out_sa(struct swsim_priv *p, struct sk_buff *skb)
{
	struct swsim_pol *pol, *best = NULL;
	struct swsim_flow fl;
	struct xfrm_tmpl *t;
	struct swsim_sa *sa;
	int family;

	if (!swsim_flow(skb, &fl))
		return NULL;
	family = fl.family;
	list_for_each_entry(pol, &p->pols, list) {
		if (pol->xp->xdo.dir != XFRM_DEV_OFFLOAD_OUT || pol->xp->family != family)
			continue;
		if (!swsim_sel_match(&pol->xp->selector, &fl, skb->dev->ifindex))
			continue;
		if (!best || pol->xp->priority < best->xp->priority)
			best = pol;
	}
	if (!best)
		return SWSIM_NO_POLICY;	/* a TX table miss: the frame leaves as it is */
	if (best->xp->action != XFRM_POLICY_ALLOW)
		return ERR_PTR(-EPERM);
	if (!best->xp->xfrm_nr)
		return NULL;	/* bypass */
	t = &best->xp->xfrm_vec[0];
	/* the newest outbound SA of the template's reqid: mlx5's TX rule matches the reqid (and
	 * the SA selector's upper protocol), no family and no address; so a cross-family tunnel's
	 * packets are framed (swsim_esp_decap shows why they cannot come back) */
	list_for_each_entry(sa, &p->sas, list)
		if (!sa->inbound && !sa->crypto && sa->x->props.reqid == t->reqid)
			return sa;
	return ERR_PTR(-ENOENT);
}

/* Receive side: the inbound offloaded SA (packet or crypto) for (daddr, spi). Called with p->lock held. */
struct swsim_sa *swsim_in_sa(struct swsim_priv *p, int family, const xfrm_address_t *daddr, __be32 spi)
{
	struct swsim_sa *sa;

	list_for_each_entry(sa, &p->sas, list)
		if (sa->inbound && sa->x->id.spi == spi && sa->x->props.family == family &&
		    xfrm_addr_equal(&sa->x->id.daddr, daddr, family))
			return sa;
	return NULL;
}
