// SPDX-License-Identifier: GPL-2.0
/*
 * swsim ESP engine: what the NIC does for packet-offloaded SAs. RFC 4303 ESP with
 * AES-GCM per RFC 4106 (nonce = 4-byte salt || 8-byte explicit IV; AAD = SPI ||
 * sequence number, SPI || seq_hi || seq_lo with ESN), tunnel and transport mode,
 * IPv4 and IPv6, anti-replay per RFC 4303 3.4.3 and Appendix A.
 */
#include <linux/etherdevice.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/scatterlist.h>
#include <crypto/aead.h>
#include <net/esp.h>
#include <net/ip.h>
#include <net/ip6_checksum.h>
#include "swsim.h"

/* One AEAD pass over [aad][iv][data]; the request and AAD live on the heap (VMAP_STACK). */
static int swsim_aead(struct swsim_sa *sa, bool enc, __be32 spi, u64 seq, u8 *iv, u8 *data, unsigned int len)
{
	struct crypto_aead *tfm = sa->aead;
	unsigned int reqsize = sizeof(struct aead_request) + crypto_aead_reqsize(tfm);
	struct scatterlist sg[3];
	struct aead_request *req;
	__be32 *aad;
	int aadlen = sa->esn ? 12 : 8, err;

	req = kmalloc(reqsize + 12, GFP_ATOMIC);
	if (!req)
		return -ENOMEM;
	aad = (__be32 *)((u8 *)req + reqsize);
	aad[0] = spi;
	if (sa->esn) {
		aad[1] = htonl(upper_32_bits(seq));
		aad[2] = htonl(lower_32_bits(seq));
	} else {
		aad[1] = htonl(lower_32_bits(seq));
	}
	sg_init_table(sg, 3);
	sg_set_buf(&sg[0], aad, aadlen);
	sg_set_buf(&sg[1], iv, SWSIM_IV_LEN);
	sg_set_buf(&sg[2], data, len);
	aead_request_set_tfm(req, tfm);
	aead_request_set_callback(req, 0, NULL, NULL);
	aead_request_set_ad(req, aadlen + SWSIM_IV_LEN);	/* rfc4106 counts the IV in */
	aead_request_set_crypt(req, sg, sg, enc ? len - SWSIM_ICV_LEN : len, iv);
	err = enc ? crypto_aead_encrypt(req) : crypto_aead_decrypt(req);
	kfree_sensitive(req);
	return err;
}

/* A fresh linear frame with room for @len bytes after the Ethernet header. */
static struct sk_buff *swsim_frame(struct net_device *dev, unsigned int len, __be16 proto)
{
	struct sk_buff *skb = alloc_skb(NET_IP_ALIGN + ETH_HLEN + len, GFP_ATOMIC);
	struct ethhdr *eth;

	if (!skb)
		return NULL;
	skb_reserve(skb, NET_IP_ALIGN);
	eth = skb_put(skb, ETH_HLEN);
	eth->h_proto = proto;
	skb_reset_mac_header(skb);
	skb_put(skb, len);
	skb->dev = dev;
	return skb;
}

/*
 * Transmit: @skb is a plain frame (Ethernet + IP) the policies sent to @sa.
 * Returns the ESP frame (MACs left for the wire to set); @skb is consumed.
 */
struct sk_buff *swsim_esp_encap(struct swsim_sa *sa, struct sk_buff *skb)
{
	struct xfrm_state *x = sa->x;
	bool tunnel = x->props.mode == XFRM_MODE_TUNNEL, v6 = x->props.family == AF_INET6;
	unsigned int iplen, hlen, plen, padlen, outer, esplen, udp, i;
	struct sk_buff *out = NULL;
	struct ip_esp_hdr *esph;
	u8 *ip, *o, *payload, *trailer, nexthdr;
	u64 seq;

	if (skb_linearize(skb) || skb->len < ETH_HLEN + sizeof(struct iphdr))
		goto drop;
	ip = skb->data + ETH_HLEN;
	iplen = skb->len - ETH_HLEN;
	if (tunnel) {
		hlen = 0;
		nexthdr = (ip[0] >> 4) == 6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
	} else if (v6) {
		hlen = sizeof(struct ipv6hdr);
		nexthdr = ((struct ipv6hdr *)ip)->nexthdr;
	} else {
		hlen = ((struct iphdr *)ip)->ihl * 4;
		nexthdr = ((struct iphdr *)ip)->protocol;
	}
	if (iplen < hlen)
		goto drop;
	plen = iplen - hlen;			/* what gets encrypted */
	padlen = (4 - (plen + 2) % 4) % 4;
	outer = tunnel ? (v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)) : hlen;
	udp = x->encap ? sizeof(struct udphdr) : 0;	/* ESP in UDP: transport mode (swsim_check_state) */
	esplen = udp + sizeof(*esph) + SWSIM_IV_LEN + plen + padlen + 2 + SWSIM_ICV_LEN;
	if (!sa->esn && sa->oseq >= U32_MAX)
		goto drop;			/* sequence exhausted: the SA must be rekeyed */
	seq = ++sa->oseq;

	out = swsim_frame(skb->dev, outer + esplen, htons(v6 ? ETH_P_IPV6 : ETH_P_IP));
	if (!out)
		goto drop;
	o = out->data + ETH_HLEN;
	skb_set_network_header(out, ETH_HLEN);
	if (!tunnel) {
		memcpy(o, ip, hlen);
	} else if (v6) {
		struct ipv6hdr *h = (struct ipv6hdr *)o;

		memset(h, 0, sizeof(*h));
		h->version = 6;
		h->hop_limit = 64;
		h->saddr = x->props.saddr.in6;
		h->daddr = x->id.daddr.in6;
	} else {
		struct iphdr *h = (struct iphdr *)o;

		memset(h, 0, sizeof(*h));
		h->version = 4;
		h->ihl = 5;
		h->ttl = 64;
		h->saddr = x->props.saddr.a4;
		h->daddr = x->id.daddr.a4;
	}
	if (v6) {
		struct ipv6hdr *h = (struct ipv6hdr *)o;

		h->nexthdr = udp ? IPPROTO_UDP : IPPROTO_ESP;
		h->payload_len = htons(outer + esplen - sizeof(*h));
	} else {
		struct iphdr *h = (struct iphdr *)o;

		h->protocol = udp ? IPPROTO_UDP : IPPROTO_ESP;
		h->tot_len = htons(outer + esplen);
		h->frag_off = 0;
		ip_send_check(h);
	}
	if (udp) {
		struct udphdr *uh = (struct udphdr *)(o + outer);

		uh->source = x->encap->encap_sport;
		uh->dest = x->encap->encap_dport;
		uh->len = htons(esplen);
		uh->check = 0;			/* IPv4: none, as the kernel's own ESP in UDP; IPv6: below */
	}
	esph = (struct ip_esp_hdr *)(o + outer + udp);
	esph->spi = x->id.spi;
	esph->seq_no = htonl(lower_32_bits(seq));
	put_unaligned_be64(seq, esph->enc_data);	/* explicit IV: unique per key, as seqiv */
	payload = esph->enc_data + SWSIM_IV_LEN;
	memcpy(payload, ip + hlen, plen);
	trailer = payload + plen;
	for (i = 0; i < padlen; i++)
		trailer[i] = i + 1;
	trailer[padlen] = padlen;
	trailer[padlen + 1] = nexthdr;
	if (swsim_aead(sa, true, x->id.spi, seq, esph->enc_data, payload, plen + padlen + 2 + SWSIM_ICV_LEN))
		goto drop;
	if (udp && v6) {			/* IPv6 requires the UDP checksum */
		struct ipv6hdr *h = (struct ipv6hdr *)o;
		struct udphdr *uh = (struct udphdr *)(o + outer);

		uh->check = csum_ipv6_magic(&h->saddr, &h->daddr, esplen, IPPROTO_UDP, csum_partial(uh, esplen, 0));
		if (!uh->check)
			uh->check = CSUM_MANGLED_0;
	}
	sa->bytes += iplen;
	sa->packets++;
	consume_skb(skb);
	return out;
drop:
	kfree_skb(out);
	kfree_skb(skb);
	return NULL;
}

/* Crypto offload, transmit: the SA of this device the kernel's ESP left @skb for, or NULL. */
struct swsim_sa *swsim_crypto_tx_sa(struct net_device *dev, struct sk_buff *skb)
{
	struct xfrm_offload *xo = xfrm_offload(skb);
	struct sec_path *sp = skb_sec_path(skb);
	struct xfrm_state *x;

	if (!xo || !sp || !sp->len || !(xo->flags & XFRM_XMIT))
		return NULL;
	x = sp->xvec[sp->len - 1];
	if (x->xso.dev != dev || x->xso.type != XFRM_DEV_OFFLOAD_CRYPTO || x->xso.dir != XFRM_DEV_OFFLOAD_OUT)
		return NULL;
	return (struct swsim_sa *)x->xso.offload_handle;
}

/*
 * Crypto offload, transmit: the kernel built the frame (outer IP, ESP header with SPI and
 * sequence number, room for the IV, plain payload and trailer, room for the ICV). The
 * device writes the IV and encrypts in place, as a ConnectX in crypto mode does.
 * Returns @skb, or NULL when it was dropped.
 */
struct sk_buff *swsim_esp_encrypt(struct swsim_sa *sa, struct sk_buff *skb)
{
	struct xfrm_offload *xo = xfrm_offload(skb);
	struct ip_esp_hdr *esph;
	unsigned int hlen, off;
	u8 *ip;
	u64 seq;

	if (skb_linearize(skb) || skb_ensure_writable(skb, skb->len) || skb->len < ETH_HLEN + sizeof(struct iphdr))
		goto drop;
	ip = skb->data + ETH_HLEN;
	if ((ip[0] >> 4) == 6) {
		if (((struct ipv6hdr *)ip)->nexthdr != IPPROTO_ESP)
			goto drop;		/* extension headers: offload_ok would have refused */
		hlen = sizeof(struct ipv6hdr);
	} else {
		hlen = ((struct iphdr *)ip)->ihl * 4;
	}
	off = ETH_HLEN + hlen + sizeof(*esph) + SWSIM_IV_LEN;
	if (skb->len < off + 2 + SWSIM_ICV_LEN)
		goto drop;
	esph = (struct ip_esp_hdr *)(ip + hlen);
	seq = ((u64)xo->seq.hi << 32) | ntohl(esph->seq_no);
	put_unaligned_be64(seq, esph->enc_data);	/* explicit IV: the sequence number, as seqiv */
	if (swsim_aead(sa, true, esph->spi, seq, esph->enc_data, skb->data + off, skb->len - off))
		goto drop;
	sa->bytes += skb->len - ETH_HLEN;
	sa->packets++;
	secpath_reset(skb);
	return skb;
drop:
	kfree_skb(skb);
	return NULL;
}

/* RFC 4303 Appendix A: the full sequence number of @lo, given the window's top. */
static u64 swsim_seq_of(struct swsim_sa *sa, u32 lo)
{
	u32 tl = lower_32_bits(sa->top), th = upper_32_bits(sa->top), w = sa->window;

	if (!sa->esn)
		return lo;
	if (tl >= w - 1)
		return ((u64)(lo >= tl - w + 1 ? th : th + 1) << 32) | lo;
	return ((u64)(lo >= tl - w + 1 ? th - 1 : th) << 32) | lo;
}

static bool swsim_replay_ok(struct swsim_sa *sa, u64 seq)
{
	if (!sa->replay)
		return true;	/* no ESN: mlx5 programs no anti-replay */
	if (!seq)
		return false;
	if (seq > sa->top)
		return true;
	if (sa->top - seq >= sa->window)
		return false;
	return !test_bit(sa->top - seq, sa->bitmap);
}

static void swsim_replay_advance(struct swsim_sa *sa, u64 seq)
{
	if (seq > sa->top) {
		u64 diff = seq - sa->top;

		if (diff >= SWSIM_MAX_WINDOW)
			bitmap_zero(sa->bitmap, SWSIM_MAX_WINDOW);
		else
			bitmap_shift_left(sa->bitmap, sa->bitmap, diff, SWSIM_MAX_WINDOW);
		sa->top = seq;
	}
	set_bit(sa->top - seq, sa->bitmap);
}

/* Mark @skb as decrypted and decapsulated by the device for SA @x, as mlx5 does. */
static int swsim_mark(struct sk_buff *skb, struct xfrm_state *x)
{
	struct xfrm_offload *xo;
	struct sec_path *sp = secpath_set(skb);

	if (!sp || sp->len == XFRM_MAX_DEPTH)
		return -ENOMEM;
	xfrm_state_hold(x);
	sp->xvec[sp->len++] = x;
	sp->olen++;
	xo = xfrm_offload(skb);
	xo->flags = CRYPTO_DONE;
	xo->status = CRYPTO_SUCCESS;
	return 0;
}

/*
 * Crypto offload, receive: decrypt in place and hand the ESP frame up marked as done
 * by the device; the kernel checks anti-replay and strips ESP itself. An ICV mismatch
 * goes up too, marked as failed, so the kernel counts it (XfrmInStateProtoError and the
 * SA's integrity_failed), as mlx5 reports its syndromes. Called with the device lock held.
 */
static struct sk_buff *swsim_crypto_decrypt(struct swsim_priv *p, struct swsim_sa *sa, struct sk_buff *skb,
					    unsigned int hlen)
{
	struct xfrm_state *x = sa->x;
	struct ip_esp_hdr *esph;
	struct xfrm_offload *xo;
	unsigned int len;
	u8 *ip;
	u64 seq;
	int err;

	skb = skb_unshare(skb, GFP_ATOMIC);
	if (!skb || skb_linearize(skb))
		goto drop;
	ip = skb->data + ETH_HLEN;
	len = skb->len - ETH_HLEN;
	if ((ip[0] >> 4) == 4)
		len = min_t(unsigned int, len, ntohs(((struct iphdr *)ip)->tot_len));
	esph = (struct ip_esp_hdr *)(ip + hlen);
	if (sa->esn && x->replay_esn)
		sa->top = ((u64)x->replay_esn->seq_hi << 32) | x->replay_esn->seq;
	seq = swsim_seq_of(sa, ntohl(esph->seq_no));
	err = swsim_aead(sa, false, esph->spi, seq, esph->enc_data, esph->enc_data + SWSIM_IV_LEN,
			 len - hlen - sizeof(*esph) - SWSIM_IV_LEN);
	if (err) {
		sa->integrity_fail++;
		p->stats[SWSIM_RX_AUTH_FAIL]++;
	}
	if (swsim_mark(skb, x))
		goto drop;
	xo = xfrm_offload(skb);
	if (err == -EBADMSG)
		xo->status = x->props.mode == XFRM_MODE_TUNNEL ? CRYPTO_TUNNEL_ESP_AUTH_FAILED
							     : CRYPTO_TRANSPORT_ESP_AUTH_FAILED;
	else if (err)
		xo->status = CRYPTO_GENERIC_ERROR;
	skb->ip_summed = CHECKSUM_NONE;
	sa->bytes += len;
	sa->packets++;
	return skb;
drop:
	kfree_skb(skb);
	return NULL;
}

/*
 * Receive on @dev: an ESP frame for one of its inbound packet-offloaded SAs is
 * checked, decrypted and stripped; one for a crypto-offloaded SA is decrypted in
 * place; anything else passes unchanged. Returns the
 * frame for the stack, or NULL when the device dropped it (counted on the SA).
 */
struct sk_buff *swsim_esp_decap(struct net_device *dev, struct sk_buff *skb)
{
	struct swsim_priv *p = netdev_priv(dev);
	unsigned int hlen, esplen, clen, inner, udp = 0;
	xfrm_address_t daddr = {};
	struct ip_esp_hdr *esph;
	struct sk_buff *out = NULL;
	struct swsim_sa *sa;
	int family;
	u8 *ip, *payload, *trailer, nexthdr;
	u64 seq;

	if (skb->len < ETH_HLEN + sizeof(struct iphdr))
		return skb;
	if (eth_hdr(skb)->h_proto == htons(ETH_P_IP)) {
		struct iphdr *h = (struct iphdr *)(skb->data + ETH_HLEN);

		if (h->protocol == IPPROTO_UDP)
			udp = sizeof(struct udphdr);	/* ESP in UDP, if an encapsulated SA has its SPI */
		else if (h->protocol != IPPROTO_ESP)
			return skb;
		if (ip_is_fragment(h))
			return skb;
		hlen = h->ihl * 4;
		daddr.a4 = h->daddr;
		family = AF_INET;
	} else if (eth_hdr(skb)->h_proto == htons(ETH_P_IPV6)) {
		struct ipv6hdr *h = (struct ipv6hdr *)(skb->data + ETH_HLEN);

		if (skb->len < ETH_HLEN + sizeof(*h))
			return skb;
		if (h->nexthdr == IPPROTO_UDP)
			udp = sizeof(struct udphdr);
		else if (h->nexthdr != IPPROTO_ESP)
			return skb;
		hlen = sizeof(*h);
		daddr.in6 = h->daddr;
		family = AF_INET6;
	} else {
		return skb;
	}
	if (skb->len < ETH_HLEN + hlen + udp + sizeof(*esph) + SWSIM_IV_LEN + 2 + SWSIM_ICV_LEN)
		return skb;
	if (udp && skb_linearize(skb))
		return skb;
	esph = (struct ip_esp_hdr *)(skb->data + ETH_HLEN + hlen + udp);
	if (udp && !esph->spi)
		return skb;			/* the non-ESP marker: IKE on the NAT-T port */

	spin_lock_bh(&p->lock);
	sa = swsim_in_sa(p, family, &daddr, esph->spi);
	if (!sa || !sa->x->encap != !udp ||
	    (udp && ((struct udphdr *)((u8 *)esph - udp))->dest != sa->x->encap->encap_dport)) {
		spin_unlock_bh(&p->lock);
		return skb;			/* not offloaded here: the stack's ESP handles it */
	}
	if (sa->crypto) {
		p->stats[SWSIM_CRYPTO_RX]++;
		skb = swsim_crypto_decrypt(p, sa, skb, hlen);
		spin_unlock_bh(&p->lock);
		return skb;
	}
	seq = swsim_seq_of(sa, ntohl(esph->seq_no));
	if (!swsim_replay_ok(sa, seq)) {
		sa->replay_fail++;
		goto drop;
	}
	skb = skb_unshare(skb, GFP_ATOMIC);
	if (!skb || skb_linearize(skb))
		goto drop;
	ip = skb->data + ETH_HLEN;
	esph = (struct ip_esp_hdr *)(ip + hlen + udp);
	esplen = skb->len - ETH_HLEN - hlen;
	if (family == AF_INET)
		esplen = min_t(unsigned int, esplen, ntohs(((struct iphdr *)ip)->tot_len) - hlen);
	else
		esplen = min_t(unsigned int, esplen, ntohs(((struct ipv6hdr *)ip)->payload_len));
	esplen -= udp;
	clen = esplen - sizeof(*esph) - SWSIM_IV_LEN;	/* ciphertext + ICV */
	payload = esph->enc_data + SWSIM_IV_LEN;
	if (swsim_aead(sa, false, esph->spi, seq, esph->enc_data, payload, clen)) {
		sa->integrity_fail++;
		p->stats[SWSIM_RX_AUTH_FAIL]++;
		goto drop;
	}
	p->stats[SWSIM_PACKET_RX]++;
	swsim_replay_advance(sa, seq);
	trailer = payload + clen - SWSIM_ICV_LEN - 2;
	nexthdr = trailer[1];
	if (trailer[0] + 2 + SWSIM_ICV_LEN > clen)
		goto drop;
	inner = clen - SWSIM_ICV_LEN - 2 - trailer[0];
	if (sa->x->props.mode == XFRM_MODE_TUNNEL) {
		if (!inner || (nexthdr != IPPROTO_IPIP && nexthdr != IPPROTO_IPV6))
			goto drop;
		/* as mlx5's RX reformat (ipsec_fs.c): the Ethernet header it writes back carries the
		 * outer family's ethertype, so the inner packet of a cross-family tunnel is misread
		 * and dropped by the stack (InHdrErrors); same-family tunnels are unaffected */
		out = swsim_frame(dev, inner, eth_hdr(skb)->h_proto);
		if (!out)
			goto drop;
		memcpy(out->data + ETH_HLEN, payload, inner);
	} else {
		out = swsim_frame(dev, hlen + inner, eth_hdr(skb)->h_proto);
		if (!out)
			goto drop;
		memcpy(out->data + ETH_HLEN, ip, hlen);
		memcpy(out->data + ETH_HLEN + hlen, payload, inner);
		if (family == AF_INET) {
			struct iphdr *h = (struct iphdr *)(out->data + ETH_HLEN);

			h->protocol = nexthdr;
			h->tot_len = htons(hlen + inner);
			ip_send_check(h);
		} else {
			struct ipv6hdr *h = (struct ipv6hdr *)(out->data + ETH_HLEN);

			h->nexthdr = nexthdr;
			h->payload_len = htons(inner);
		}
	}
	memcpy(eth_hdr(out)->h_dest, eth_hdr(skb)->h_dest, ETH_ALEN);
	memcpy(eth_hdr(out)->h_source, eth_hdr(skb)->h_source, ETH_ALEN);
	if (swsim_mark(out, sa->x))
		goto drop;
	sa->bytes += skb->len - ETH_HLEN;
	sa->packets++;
	spin_unlock_bh(&p->lock);
	consume_skb(skb);
	return out;
drop:
	spin_unlock_bh(&p->lock);
	kfree_skb(out);
	kfree_skb(skb);
	return NULL;
}
