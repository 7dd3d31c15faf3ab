/* SPDX-License-Identifier: GPL-2.0 */
/*
 * swsim: a simulated packet-offload NIC pair for the swan-offload kernel lab.
 *
 * Two linked Ethernet devices (like veth). Each implements the XFRM device
 * operations and accepts what an mlx5 ConnectX would; for packet-offloaded SAs
 * it builds and strips real ESP (RFC 4303, AES-GCM per RFC 4106) on the "wire"
 * between the pair, so the kernel above sees plain packets, as with the real NIC.
 * For crypto-offloaded SAs the kernel frames ESP itself and the device only
 * encrypts (fills IV and ICV) and decrypts in place.
 */
#ifndef SWSIM_H
#define SWSIM_H

#include <linux/netdevice.h>
#include <linux/spinlock.h>
#include <net/xfrm.h>

#define SWSIM_ICV_LEN 16
#define SWSIM_IV_LEN 8
#define SWSIM_MAX_WINDOW 256

extern int swsim_max_sa;
/* capabilities a ConnectX may lack (mlx5_ipsec_device_caps): 1 = has it */
extern bool swsim_cap_esn, swsim_cap_tunnel, swsim_cap_prio, swsim_cap_espinudp;
extern int swsim_steer;	/* 612: policy addresses matched exactly in TX steering; 615: by prefix */
#define SWSIM_NO_POLICY ((struct swsim_sa *)1)	/* swsim_out_sa: no offloaded policy matched */

/* One offloaded SA: the "hardware" copy of what the kernel gave the device. */
struct swsim_sa {
	struct list_head list;
	struct xfrm_state *x;
	struct crypto_aead *aead;
	bool inbound;
	bool crypto;			/* crypto offload: the kernel frames ESP, the device ciphers */
	bool esn;
	bool replay;			/* inbound anti-replay in the device: ESN SAs only, as mlx5 */
	u64 oseq;			/* outbound: last sequence number sent */
	u64 top;			/* inbound: highest sequence number accepted */
	u32 window;			/* inbound: replay window (bits) */
	unsigned long bitmap[SWSIM_MAX_WINDOW / BITS_PER_LONG];
	u64 bytes, packets;		/* device counters, read by update_stats */
	u32 replay_fail, integrity_fail;
};

/* One offloaded policy: selector, direction, template reqid, action. */
struct swsim_pol {
	struct list_head list;
	struct xfrm_policy *xp;
};

/* Device counters, read with `ethtool -S` (mlx5 reports its IPsec offload counters there too). */
enum swsim_stat {
	SWSIM_PACKET_TX, SWSIM_PACKET_RX,	/* ESP built / stripped for packet-offloaded SAs */
	SWSIM_CRYPTO_TX, SWSIM_CRYPTO_RX,	/* ESP enciphered / deciphered for crypto-offloaded SAs */
	SWSIM_RX_AUTH_FAIL,			/* ICV mismatches, either mode */
	SWSIM_TX_NO_POLICY,			/* IP frames no offloaded OUT policy matched: sent as they are */
	SWSIM_NSTATS
};

struct swsim_priv {
	struct net_device __rcu *peer;
	spinlock_t lock;		/* the SA and policy tables and every SA's counters */
	struct list_head sas;
	struct list_head pols;
	int nsa;
	u64 stats[SWSIM_NSTATS];	/* under lock */
};

extern const struct xfrmdev_ops swsim_xfrmdev_ops;
extern const struct ethtool_ops swsim_ethtool_ops;

/* swsim_xfrm.c: tables */
struct swsim_sa *swsim_out_sa(struct swsim_priv *p, struct sk_buff *skb);
struct swsim_sa *swsim_in_sa(struct swsim_priv *p, int family, const xfrm_address_t *daddr, __be32 spi);

/* swsim_esp.c: the datapath; both consume skb and return the frame to pass on, or NULL */
struct sk_buff *swsim_esp_encap(struct swsim_sa *sa, struct sk_buff *skb);
struct sk_buff *swsim_esp_decap(struct net_device *dev, struct sk_buff *skb);
/* crypto offload, transmit: the SA the kernel's ESP framing left for this device, or NULL */
struct swsim_sa *swsim_crypto_tx_sa(struct net_device *dev, struct sk_buff *skb);
struct sk_buff *swsim_esp_encrypt(struct swsim_sa *sa, struct sk_buff *skb);

#endif
