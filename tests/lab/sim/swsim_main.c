// SPDX-License-Identifier: GPL-2.0
/*
 * swsim: one pair of linked Ethernet devices, swsim0 <-> swsim1, created at load.
 * Frames sent on one arrive on the other (like veth). Between them sits the
 * "hardware": the sender's packet-offloaded OUT policies and SAs turn plain frames
 * into ESP, the receiver's inbound SAs turn ESP back into plain frames marked as
 * decrypted by the device. Crypto-offloaded SAs are enciphered and deciphered in
 * place in the ESP frames the kernel builds and strips. Traffic that matches no offloaded policy or SA passes
 * unchanged, so a peer running software ESP interoperates.
 *
 *   insmod swsim.ko max_sa=N     cap on offloaded SAs per device (ENOSPC beyond)
 *                   esn=0 tunnel=0 prio=0   a card without that capability (mlx5's
 *                                MLX5_IPSEC_CAP_ESN, _TUNNEL, _PRIO): refused with its words
 */
#include <linux/module.h>
#include <linux/etherdevice.h>
#include <linux/ethtool.h>
#include <linux/rtnetlink.h>
#include "swsim.h"

int swsim_max_sa = 1024;
module_param_named(max_sa, swsim_max_sa, int, 0644);
MODULE_PARM_DESC(max_sa, "offloaded SAs each device accepts before refusing (ENOSPC)");
bool swsim_cap_esn = true, swsim_cap_tunnel = true, swsim_cap_prio = true;
module_param_named(esn, swsim_cap_esn, bool, 0644);
MODULE_PARM_DESC(esn, "ESN SAs offloadable (MLX5_IPSEC_CAP_ESN)");
module_param_named(tunnel, swsim_cap_tunnel, bool, 0644);
MODULE_PARM_DESC(tunnel, "tunnel mode in packet offload (MLX5_IPSEC_CAP_TUNNEL)");
module_param_named(prio, swsim_cap_prio, bool, 0644);
MODULE_PARM_DESC(prio, "policies with a non-zero priority offloadable (MLX5_IPSEC_CAP_PRIO)");
bool swsim_cap_espinudp;
module_param_named(espinudp, swsim_cap_espinudp, bool, 0644);
MODULE_PARM_DESC(espinudp, "ESP in UDP (NAT-T) in packet offload, transport mode (MLX5_IPSEC_CAP_ESPINUDP)");
int swsim_steer = 615;
module_param_named(steer, swsim_steer, int, 0644);
MODULE_PARM_DESC(steer, "policy addresses in TX steering as mlx5 of 6.12 (exact, prefix ignored) or 6.15 (prefix)");

static struct net_device *swsim_devs[2];

static netdev_tx_t swsim_xmit(struct sk_buff *skb, struct net_device *dev)
{
	struct swsim_priv *p = netdev_priv(dev);
	struct net_device *peer;
	struct swsim_sa *sa;
	unsigned int len;

	rcu_read_lock();
	peer = rcu_dereference(p->peer);
	if (!peer || !netif_carrier_ok(dev))
		goto drop;
	spin_lock_bh(&p->lock);
	sa = swsim_crypto_tx_sa(dev, skb);
	if (sa) {
		p->stats[SWSIM_CRYPTO_TX]++;
		skb = swsim_esp_encrypt(sa, skb);
		spin_unlock_bh(&p->lock);
		if (!skb) {
			DEV_STATS_INC(dev, tx_dropped);
			goto out;
		}
		goto wire;
	}
	sa = swsim_out_sa(p, skb);
	if (sa == SWSIM_NO_POLICY) {
		p->stats[SWSIM_TX_NO_POLICY]++;
		sa = NULL;
	}
	if (IS_ERR(sa)) {
		spin_unlock_bh(&p->lock);
		goto drop;			/* an offloaded policy without SA, or a block */
	}
	if (sa) {
		p->stats[SWSIM_PACKET_TX]++;
		skb = swsim_esp_encap(sa, skb);
		if (!skb) {
			spin_unlock_bh(&p->lock);
			DEV_STATS_INC(dev, tx_dropped);
			goto out;
		}
	}
	spin_unlock_bh(&p->lock);
wire:
	len = skb->len;
	DEV_STATS_INC(dev, tx_packets);
	DEV_STATS_ADD(dev, tx_bytes, len);

	/* the wire: the peer's receive side, in its own namespace */
	skb_scrub_packet(skb, !net_eq(dev_net(dev), dev_net(peer)));
	memcpy(eth_hdr(skb)->h_dest, peer->dev_addr, ETH_ALEN);
	memcpy(eth_hdr(skb)->h_source, dev->dev_addr, ETH_ALEN);
	skb = swsim_esp_decap(peer, skb);
	if (!skb) {
		DEV_STATS_INC(peer, rx_dropped);
		goto out;
	}
	skb->protocol = eth_type_trans(skb, peer);
	DEV_STATS_INC(peer, rx_packets);
	DEV_STATS_ADD(peer, rx_bytes, skb->len + ETH_HLEN);
	netif_rx(skb);
out:
	rcu_read_unlock();
	return NETDEV_TX_OK;
drop:
	DEV_STATS_INC(dev, tx_dropped);
	kfree_skb(skb);
	rcu_read_unlock();
	return NETDEV_TX_OK;
}

static struct net_device *swsim_peer(struct net_device *dev)
{
	return rtnl_dereference(((struct swsim_priv *)netdev_priv(dev))->peer);
}

static int swsim_open(struct net_device *dev)
{
	struct net_device *peer = swsim_peer(dev);

	if (peer && (peer->flags & IFF_UP)) {
		netif_carrier_on(dev);
		netif_carrier_on(peer);
	}
	return 0;
}

static int swsim_stop(struct net_device *dev)
{
	struct net_device *peer = swsim_peer(dev);

	netif_carrier_off(dev);
	if (peer)
		netif_carrier_off(peer);
	return 0;
}

static const struct net_device_ops swsim_netdev_ops = {
	.ndo_open = swsim_open,
	.ndo_stop = swsim_stop,
	.ndo_start_xmit = swsim_xmit,
	.ndo_set_mac_address = eth_mac_addr,
};

static const char swsim_stat_names[SWSIM_NSTATS][ETH_GSTRING_LEN] = {
	"ipsec_packet_tx_pkts", "ipsec_packet_rx_pkts",
	"ipsec_crypto_tx_pkts", "ipsec_crypto_rx_pkts", "ipsec_rx_auth_fail",
	"ipsec_tx_no_policy",
};

/*
 * Which mlx5 steering this device follows, where an agent can read it (ETHTOOL_GDRVINFO): a
 * ConnectX says mlx5_core and the kernel release says which steering it has; swsim's release
 * is the lab's 6.12 whatever it models, so its firmware version says.
 */
static void swsim_get_drvinfo(struct net_device *dev, struct ethtool_drvinfo *info)
{
	strscpy(info->driver, "swsim", sizeof(info->driver));
	snprintf(info->fw_version, sizeof(info->fw_version), "steer %d.%d", swsim_steer / 100, swsim_steer % 100);
}

static int swsim_sset_count(struct net_device *dev, int sset)
{
	return sset == ETH_SS_STATS ? SWSIM_NSTATS : -EOPNOTSUPP;
}

static void swsim_get_strings(struct net_device *dev, u32 sset, u8 *buf)
{
	if (sset == ETH_SS_STATS)
		memcpy(buf, swsim_stat_names, sizeof(swsim_stat_names));
}

static void swsim_get_stats(struct net_device *dev, struct ethtool_stats *st, u64 *data)
{
	struct swsim_priv *p = netdev_priv(dev);

	spin_lock_bh(&p->lock);
	memcpy(data, p->stats, sizeof(p->stats));
	spin_unlock_bh(&p->lock);
}

const struct ethtool_ops swsim_ethtool_ops = {
	.get_drvinfo = swsim_get_drvinfo,
	.get_sset_count = swsim_sset_count,
	.get_strings = swsim_get_strings,
	.get_ethtool_stats = swsim_get_stats,
};

static void swsim_setup(struct net_device *dev)
{
	struct swsim_priv *p = netdev_priv(dev);

	ether_setup(dev);
	dev->netdev_ops = &swsim_netdev_ops;
	dev->xfrmdev_ops = &swsim_xfrmdev_ops;
	dev->ethtool_ops = &swsim_ethtool_ops;
	dev->features |= NETIF_F_HW_ESP;
	dev->hw_features |= NETIF_F_HW_ESP;
	/* tunnel mode sets skb->encapsulation: without this the kernel enciphers in software */
	dev->hw_enc_features |= NETIF_F_HW_ESP;
	dev->priv_flags |= IFF_NO_QUEUE;
	dev->min_mtu = 68;
	dev->max_mtu = 9000;
	eth_hw_addr_random(dev);
	spin_lock_init(&p->lock);
	INIT_LIST_HEAD(&p->sas);
	INIT_LIST_HEAD(&p->pols);
}

static int __init swsim_init(void)
{
	int i, err;

	for (i = 0; i < 2; i++) {
		swsim_devs[i] = alloc_netdev(sizeof(struct swsim_priv), "swsim%d", NET_NAME_ENUM, swsim_setup);
		if (!swsim_devs[i]) {
			err = -ENOMEM;
			goto fail;
		}
	}
	rcu_assign_pointer(((struct swsim_priv *)netdev_priv(swsim_devs[0]))->peer, swsim_devs[1]);
	rcu_assign_pointer(((struct swsim_priv *)netdev_priv(swsim_devs[1]))->peer, swsim_devs[0]);
	for (i = 0; i < 2; i++) {
		netif_carrier_off(swsim_devs[i]);
		err = register_netdev(swsim_devs[i]);
		if (err) {
			if (i)
				unregister_netdev(swsim_devs[0]);
			goto fail;
		}
	}
	return 0;
fail:
	for (i = 0; i < 2; i++)
		if (swsim_devs[i])
			free_netdev(swsim_devs[i]);
	return err;
}

static void __exit swsim_exit(void)
{
	int i;

	rtnl_lock();
	for (i = 0; i < 2; i++)
		RCU_INIT_POINTER(((struct swsim_priv *)netdev_priv(swsim_devs[i]))->peer, NULL);
	rtnl_unlock();
	synchronize_net();
	for (i = 0; i < 2; i++) {
		unregister_netdev(swsim_devs[i]);
		free_netdev(swsim_devs[i]);
	}
}

module_init(swsim_init);
module_exit(swsim_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("swan-offload lab: simulated packet-offload NIC pair (ESP AES-GCM in the 'hardware')");
