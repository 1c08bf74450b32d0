/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-net over virtio-mmio: see virtio_net.h for the model. This file
 * speaks to the transport registers itself (two queues, many buffers in
 * flight), so virtio_drv.c's one-queue path stays as it is.
 *
 * Init: reset -> ACKNOWLEDGE -> DRIVER -> features -> FEATURES_OK (checked)
 * -> queues 0 and 1 -> DRIVER_OK -> RX ring filled and notified once.
 */
#include "virtio_net.h"

#define R_MAGIC                 0x000
#define R_VERSION               0x004
#define R_DEVICE_FEATURES       0x010
#define R_DEVICE_FEATURES_SEL   0x014
#define R_DRIVER_FEATURES       0x020
#define R_DRIVER_FEATURES_SEL   0x024
#define R_QUEUE_SEL             0x030
#define R_QUEUE_NUM_MAX         0x034
#define R_QUEUE_NUM             0x038
#define R_QUEUE_READY           0x044
#define R_QUEUE_NOTIFY          0x050
#define R_INTERRUPT_STATUS      0x060
#define R_INTERRUPT_ACK         0x064
#define R_STATUS                0x070
#define R_QUEUE_DESC_LOW        0x080
#define R_QUEUE_DESC_HIGH       0x084
#define R_QUEUE_DRIVER_LOW      0x090
#define R_QUEUE_DRIVER_HIGH     0x094
#define R_QUEUE_DEVICE_LOW      0x0A0
#define R_QUEUE_DEVICE_HIGH     0x0A4
#define R_CONFIG                0x100

#define RXQ                     0
#define TXQ                     1
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define STATUS_CHECK_MS         10
#define TX_WATCHDOG_US          1000

/* Per queue: descriptor table, avail ring, used ring, one page each. */
static uint8_t net_qmem[2][3][4096] __attribute__((noinit, aligned(4096)));
static uint8_t net_rx_bufs[NET_QMAX * NET_BUF_SIZE] __attribute__((noinit, aligned(4096)));
static uint8_t net_tx_bufs[NET_QMAX * NET_BUF_SIZE] __attribute__((noinit, aligned(4096)));
static uint8_t net_reasm[NET_REASM_SIZE] __attribute__((noinit, aligned(64)));
static bool net_in_use;

static uint32_t rd(const struct net_dev *n, uint32_t reg)
{
	return mmio_read32(n->base + reg);
}

static void wr(const struct net_dev *n, uint32_t reg, uint32_t v)
{
	mmio_write32(n->base + reg, v);
}

static void set_status(struct net_dev *n, uint32_t bits)
{
	wr(n, R_STATUS, rd(n, R_STATUS) | bits);
}

uint16_t net_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

uint32_t net_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

void net_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

void net_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* used ring element i: {le32 id, le32 len} at 4 + 8 * i. */
static volatile uint32_t *used_elem(const struct net_queue *q, uint16_t i)
{
	return (volatile uint32_t *)(q->used + 4 + 8u * (i % q->size));
}

static uint16_t used_idx(const struct net_queue *q)
{
	return *(volatile uint16_t *)(q->used + 2);
}

static void kick(struct net_dev *n, uint32_t queue)
{
	barrier();
	wr(n, R_QUEUE_NOTIFY, queue);
	if (queue == RXQ)
		n->rx_kicks++;
	else
		n->tx_kicks++;
}

static int setup_queue(struct net_dev *n, uint32_t sel, struct net_queue *q, uint8_t *bufs,
		       uint32_t *qmax)
{
	wr(n, R_QUEUE_SEL, sel);
	if (rd(n, R_QUEUE_READY) != 0)
		return -VIRTIO_E_QUEUE;
	*qmax = rd(n, R_QUEUE_NUM_MAX);
	if (*qmax == 0)
		return -VIRTIO_E_NO_QUEUE;
	uint32_t size = *qmax < NET_QMAX ? *qmax : NET_QMAX;
	while (size & (size - 1))
		size &= size - 1;
	memset(net_qmem[sel], 0, sizeof(net_qmem[sel]));
	q->size = (uint16_t)size;
	q->avail_idx = 0;
	q->used_idx = 0;
	q->desc = (volatile struct virtq_desc *)net_qmem[sel][0];
	q->avail = (volatile uint16_t *)net_qmem[sel][1];
	q->used = net_qmem[sel][2];
	q->bufs = bufs;
	q->avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;

	uint64_t desc = (uintptr_t)q->desc, avail = (uintptr_t)q->avail, used = (uintptr_t)q->used;
	wr(n, R_QUEUE_NUM, size);
	wr(n, R_QUEUE_DESC_LOW, (uint32_t)desc);
	wr(n, R_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
	wr(n, R_QUEUE_DRIVER_LOW, (uint32_t)avail);
	wr(n, R_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
	wr(n, R_QUEUE_DEVICE_LOW, (uint32_t)used);
	wr(n, R_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
	wr(n, R_QUEUE_READY, 1);
	return rd(n, R_QUEUE_READY) == 1 ? 0 : -VIRTIO_E_QUEUE;
}

static int reset(struct net_dev *n)
{
	if (rd(n, R_STATUS) == 0)
		return 0;
	wr(n, R_STATUS, 0);
	uint64_t start = rdtsc(), budget = 1000 * tsc_khz();
	while (rd(n, R_STATUS) != 0) {
		if (rdtsc() - start > budget)
			return -VIRTIO_E_RESET;
		udelay(100);
	}
	return 0;
}

static int init(struct net_dev *n)
{
	if (rd(n, R_MAGIC) != 0x74726976)
		return -VIRTIO_E_MAGIC;
	if (rd(n, R_VERSION) != 2)
		return -VIRTIO_E_LEGACY;
	int err = reset(n);
	if (err)
		return err;
	set_status(n, VIRTIO_STATUS_ACKNOWLEDGE);
	set_status(n, VIRTIO_STATUS_DRIVER);
	wr(n, R_DEVICE_FEATURES_SEL, 1);
	n->offered = (uint64_t)rd(n, R_DEVICE_FEATURES) << 32;
	wr(n, R_DEVICE_FEATURES_SEL, 0);
	n->offered |= rd(n, R_DEVICE_FEATURES);
	if (!(n->offered & FEATURE(VIRTIO_F_VERSION_1))) {
		set_status(n, VIRTIO_STATUS_FAILED);
		return -VIRTIO_E_NO_VERSION_1;
	}
	uint64_t wanted = FEATURE(VIRTIO_F_VERSION_1) | FEATURE(VIRTIO_NET_F_MAC);
	if (cmdline_get_u64(g_boot.cmdline, "squibtest.net_mrg", 1))
		wanted |= FEATURE(VIRTIO_NET_F_MRG_RXBUF);
	n->features = wanted & n->offered;
	wr(n, R_DRIVER_FEATURES_SEL, 1);
	wr(n, R_DRIVER_FEATURES, (uint32_t)(n->features >> 32));
	wr(n, R_DRIVER_FEATURES_SEL, 0);
	wr(n, R_DRIVER_FEATURES, (uint32_t)n->features);
	set_status(n, VIRTIO_STATUS_FEATURES_OK);
	if (!(rd(n, R_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
		set_status(n, VIRTIO_STATUS_FAILED);
		return -VIRTIO_E_FEATURES;
	}
	n->has_mac = (n->features & FEATURE(VIRTIO_NET_F_MAC)) != 0;
	n->mrg = (n->features & FEATURE(VIRTIO_NET_F_MRG_RXBUF)) != 0;
	if (n->has_mac) {
		/* 32-bit config reads: every transport accepts them. */
		uint32_t lo = rd(n, R_CONFIG), hi = rd(n, R_CONFIG + 4);
		for (int i = 0; i < 4; i++)
			n->mac[i] = (uint8_t)(lo >> (8 * i));
		n->mac[4] = (uint8_t)hi;
		n->mac[5] = (uint8_t)(hi >> 8);
	} else {
		static const uint8_t def[ETH_ALEN] = { 0x02, 0x53, 0x51, 0x00, 0x00, 0x01 };
		memcpy(n->mac, def, ETH_ALEN);
	}
	err = setup_queue(n, RXQ, &n->rx, net_rx_bufs, &n->rx_qmax);
	if (!err)
		err = setup_queue(n, TXQ, &n->tx, net_tx_bufs, &n->tx_qmax);
	if (err) {
		set_status(n, VIRTIO_STATUS_FAILED);
		return err;
	}
	set_status(n, VIRTIO_STATUS_DRIVER_OK);
	if (rd(n, R_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
		return -VIRTIO_E_NEEDS_RESET;

	/* RX: every descriptor is one device-writable buffer, all of them available. */
	struct net_queue *rx = &n->rx;
	for (uint16_t i = 0; i < rx->size; i++) {
		rx->desc[i].addr = (uintptr_t)(rx->bufs + (uint32_t)i * NET_BUF_SIZE);
		rx->desc[i].len = NET_BUF_SIZE;
		rx->desc[i].flags = VIRTQ_DESC_F_WRITE;
		rx->desc[i].next = 0;
		rx->avail[2 + i] = i;
	}
	barrier();
	rx->avail_idx = rx->size;
	rx->avail[1] = rx->avail_idx;
	kick(n, RXQ);
	/* TX: every slot free. */
	for (uint16_t i = 0; i < n->tx.size; i++)
		n->tx_free[i] = (uint16_t)(n->tx.size - 1 - i);
	n->tx_nfree = n->tx.size;
	n->rx_idle_since = rdtsc();
	return 0;
}

int net_open(struct net_dev *n, const char *name)
{
	memset(n, 0, sizeof(*n));
	if (net_in_use) {
		kprintf("TEST fail %s virtio-net-already-open\n", name);
		return 1;
	}
	n->index = (uint32_t)cmdline_get_u64(g_boot.cmdline, "squibtest.net", 0);
	struct virtio_mmio_dev m;
	if (virtio_find(VIRTIO_ID_NET, n->index, &m)) {
		kprintf("TEST fail %s no-virtio-net index=%u\n", name, n->index);
		return 1;
	}
	n->base = m.base;
	n->irq = m.irq;
	int err = init(n);
	if (err) {
		kprintf("TEST fail %s init %s base=%#lx status=%#x\n", name, virtio_strerror(err),
			m.base, rd(n, R_STATUS));
		return 1;
	}
	net_in_use = true;
	kprintf("TEST info virtio-net index=%u base=%#lx irq=%u offered=%#lx features=%#lx "
		"mac=%02x:%02x:%02x:%02x:%02x:%02x mac_offered=%u mrg_rxbuf=%u rx_qmax=%u "
		"tx_qmax=%u rx_size=%u tx_size=%u\n",
		n->index, n->base, n->irq, n->offered, n->features, n->mac[0], n->mac[1], n->mac[2],
		n->mac[3], n->mac[4], n->mac[5], n->has_mac, n->mrg, n->rx_qmax, n->tx_qmax,
		n->rx.size, n->tx.size);
	return 0;
}

/* Takes back every TX slot the device has used. */
static void tx_reclaim(struct net_dev *n)
{
	struct net_queue *q = &n->tx;
	uint16_t end = used_idx(q);
	while (q->used_idx != end) {
		barrier();
		uint32_t id = used_elem(q, q->used_idx)[0];
		q->used_idx++;
		if (id >= q->size || n->tx_nfree >= q->size) {
			n->broken = VIRTIO_E_USED;
			continue;
		}
		n->tx_free[n->tx_nfree++] = (uint16_t)id;
	}
}

void net_copy(void *dst, const void *src, size_t n)
{
	__asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

void net_tx_prefill(struct net_dev *n, const uint8_t *frame, uint32_t len)
{
	if (len > NET_BUF_SIZE - NET_HDR_LEN)
		len = NET_BUF_SIZE - NET_HDR_LEN;
	for (uint32_t i = 0; i < n->tx.size; i++)
		net_copy(n->tx.bufs + i * NET_BUF_SIZE + NET_HDR_LEN, frame, len);
}

uint8_t *net_tx_buf(struct net_dev *n)
{
	if (!n->tx_nfree)
		tx_reclaim(n);
	if (!n->tx_nfree || n->broken)
		return NULL;
	uint16_t id = n->tx_free[n->tx_nfree - 1];
	return n->tx.bufs + (uint32_t)id * NET_BUF_SIZE + NET_HDR_LEN;
}

void net_tx_kick(struct net_dev *n)
{
	if (n->tx_unkicked) {
		n->tx_unkicked = 0;
		kick(n, TXQ);
	}
}

void net_tx_commit(struct net_dev *n, uint32_t len)
{
	struct net_queue *q = &n->tx;
	if (!n->tx_nfree)
		return;
	uint16_t id = n->tx_free[--n->tx_nfree];
	uint8_t *buf = q->bufs + (uint32_t)id * NET_BUF_SIZE;
	/* virtio_net_hdr_v1 all zero: no offloads, gso NONE, num_buffers 0. */
	((volatile uint32_t *)buf)[0] = 0;
	((volatile uint32_t *)buf)[1] = 0;
	((volatile uint32_t *)buf)[2] = 0;
	if (len > NET_BUF_SIZE - NET_HDR_LEN)
		len = NET_BUF_SIZE - NET_HDR_LEN;
	q->desc[id].addr = (uintptr_t)buf;
	q->desc[id].len = NET_HDR_LEN + len;
	q->desc[id].flags = 0;
	q->desc[id].next = 0;
	q->avail[2 + q->avail_idx % q->size] = id;
	barrier();
	q->avail[1] = ++q->avail_idx;
	n->tx_frames++;
	n->tx_bytes += len;
	if (++n->tx_unkicked >= NET_TX_BATCH)
		net_tx_kick(n);
}

static int check_needs_reset(struct net_dev *n)
{
	if (rd(n, R_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
		n->broken = VIRTIO_E_NEEDS_RESET;
		return -VIRTIO_E_NEEDS_RESET;
	}
	return 0;
}

int net_tx_send(struct net_dev *n, const void *frame, uint32_t len)
{
	uint64_t start = rdtsc(), timeout = virtio_io_timeout();
	uint64_t next_kick = TX_WATCHDOG_US * tsc_khz() / 1000;
	uint8_t *buf;
	while (!(buf = net_tx_buf(n))) {
		if (n->broken)
			return -n->broken;
		uint64_t el = rdtsc() - start;
		if (el > next_kick) {
			/* Every slot is out: make sure the device knows about them. */
			kick(n, TXQ);
			n->tx_unkicked = 0;
			if (check_needs_reset(n))
				return -VIRTIO_E_NEEDS_RESET;
			next_kick += TX_WATCHDOG_US * tsc_khz() / 1000;
		}
		if (el > timeout) {
			n->broken = VIRTIO_E_TIMEOUT;
			return -VIRTIO_E_TIMEOUT;
		}
		cpu_relax();
	}
	net_copy(buf, frame, len);
	net_tx_commit(n, len);
	return 0;
}

int net_tx_flush(struct net_dev *n, uint64_t timeout_cycles)
{
	net_tx_kick(n);
	uint64_t start = rdtsc(), next_kick = TX_WATCHDOG_US * tsc_khz() / 1000;
	for (;;) {
		tx_reclaim(n);
		if (n->broken)
			return -n->broken;
		if (n->tx_nfree == n->tx.size)
			return 0;
		uint64_t el = rdtsc() - start;
		if (el > next_kick) {
			kick(n, TXQ);
			if (check_needs_reset(n))
				return -VIRTIO_E_NEEDS_RESET;
			next_kick += TX_WATCHDOG_US * tsc_khz() / 1000;
		}
		if (el > timeout_cycles) {
			n->broken = VIRTIO_E_TIMEOUT;
			return -VIRTIO_E_TIMEOUT;
		}
		cpu_relax();
	}
}

int net_tx_bulk(struct net_dev *n, uint64_t count, uint32_t len, uint64_t timeout_cycles)
{
	struct net_queue *q = &n->tx;
	uint16_t size = q->size, mask = (uint16_t)(size - 1);
	if (n->tx_nfree != size)
		return -VIRTIO_E_CHAIN;
	/* Slot i is descriptor i, in ring order; the device uses TX chains in order. */
	for (uint16_t i = 0; i < size; i++) {
		uint8_t *buf = q->bufs + (uint32_t)i * NET_BUF_SIZE;
		((volatile uint32_t *)buf)[0] = 0;
		((volatile uint32_t *)buf)[1] = 0;
		((volatile uint32_t *)buf)[2] = 0;
		q->desc[i].addr = (uintptr_t)buf;
		q->desc[i].len = NET_HDR_LEN + len;
		q->desc[i].flags = 0;
		q->desc[i].next = 0;
	}
	volatile uint16_t *ring = q->avail + 2;
	uint64_t sent = 0, start = rdtsc(), last_progress = start;
	uint16_t avail = q->avail_idx, batch = 0;
	uint64_t kick_gap = TX_WATCHDOG_US * tsc_khz() / 1000;
	while (sent < count || q->used_idx != avail) {
		uint16_t used = used_idx(q);
		if (used != q->used_idx) {
			uint16_t expect = q->used_idx & mask;
			if (used_elem(q, q->used_idx)[0] != expect) {
				n->broken = VIRTIO_E_USED;
				return -VIRTIO_E_USED;
			}
			q->used_idx = used;
			last_progress = rdtsc();
		}
		uint16_t room = (uint16_t)(size - (uint16_t)(avail - q->used_idx));
		while (room && sent < count) {
			ring[avail & mask] = avail & mask;
			avail++;
			sent++;
			room--;
			if (++batch == NET_TX_BATCH)
				break;
		}
		if (batch) {
			barrier();
			q->avail[1] = avail;
			batch = 0;
			kick(n, TXQ);
			continue;
		}
		uint64_t now = rdtsc();
		if (now - last_progress > kick_gap) {
			kick(n, TXQ);
			if (check_needs_reset(n))
				return -VIRTIO_E_NEEDS_RESET;
			if (now - last_progress > timeout_cycles) {
				n->broken = VIRTIO_E_TIMEOUT;
				return -VIRTIO_E_TIMEOUT;
			}
			kick_gap += TX_WATCHDOG_US * tsc_khz() / 1000;
		}
		cpu_relax();
	}
	q->avail_idx = avail;
	n->tx_frames += count;
	n->tx_bytes += count * len;
	return 0;
}

int64_t net_rx_bulk(struct net_dev *n, uint64_t count, uint32_t len, uint8_t tag,
		    uint64_t timeout_cycles, uint64_t *t_first, uint64_t *t_last,
		    uint64_t *ignored)
{
	struct net_queue *q = &n->rx;
	uint16_t size = q->size, mask = (uint16_t)(size - 1);
	volatile uint16_t *ring = q->avail + 2;
	uint64_t got = 0, idle = NET_RX_IDLE_US * tsc_khz() / 1000, last = rdtsc();
	uint16_t avail = q->avail_idx, reposted = 0;
	if (n->rx_nheld)
		net_rx_done(n);
	*t_first = *t_last = 0;
	while (got < count) {
		uint16_t used = used_idx(q);
		if (used == q->used_idx) {
			uint64_t now = rdtsc();
			if (now - last > idle && reposted) {
				reposted = 0;
				kick(n, RXQ);
			}
			if (now - last > timeout_cycles)
				break;
			cpu_relax();
			continue;
		}
		bool starving = used == avail;
		while (q->used_idx != used) {
			volatile uint32_t *e = used_elem(q, q->used_idx);
			uint32_t id = e[0] & mask, ulen = e[1];
			const volatile uint8_t *f = q->bufs + id * NET_BUF_SIZE + NET_HDR_LEN;
			if (ulen == NET_HDR_LEN + len && f[14] == tag) {
				*t_last = rdtsc();
				if (!got++)
					*t_first = *t_last;
			} else {
				(*ignored)++;
			}
			n->rx_frames++;
			n->rx_bytes += ulen - NET_HDR_LEN;
			ring[avail & mask] = (uint16_t)id;
			avail++;
			reposted++;
			q->used_idx++;
		}
		barrier();
		q->avail[1] = avail;
		q->avail_idx = avail;
		last = rdtsc();
		if (starving) {
			reposted = 0;
			kick(n, RXQ);
		}
	}
	n->rx_reposted = reposted;
	return (int64_t)got;
}

int net_rx_poll(struct net_dev *n, uint8_t **frame, uint32_t *len)
{
	struct net_queue *q = &n->rx;
	if (n->broken)
		return -n->broken;
	if (n->rx_nheld)
		net_rx_done(n);
	uint16_t end = used_idx(q);
	if (end == q->used_idx) {
		/* Nothing: after a quiet spell, make sure the device is not waiting for us. */
		if (n->rx_reposted &&
		    rdtsc() - n->rx_idle_since > NET_RX_IDLE_US * tsc_khz() / 1000) {
			n->rx_reposted = 0;
			kick(n, RXQ);
			n->rx_idle_since = rdtsc();
		}
		return 0;
	}
	barrier();
	uint32_t id = used_elem(q, q->used_idx)[0], ulen = used_elem(q, q->used_idx)[1];
	if (id >= q->size || ulen < NET_HDR_LEN || ulen > NET_BUF_SIZE) {
		n->broken = VIRTIO_E_USED;
		return -VIRTIO_E_USED;
	}
	uint8_t *buf = q->bufs + id * NET_BUF_SIZE;
	uint16_t nbufs = n->mrg ? (uint16_t)(buf[10] | (buf[11] << 8)) : 1;
	if (nbufs == 0 || nbufs > q->size) {
		n->broken = VIRTIO_E_USED;
		return -VIRTIO_E_USED;
	}
	if ((uint16_t)(end - q->used_idx) < nbufs)
		return 0;       /* the rest of a merged frame is not published yet */
	n->rx_idle_since = rdtsc();
	if (nbufs == 1) {
		q->used_idx++;
		n->rx_held[0] = (uint16_t)id;
		n->rx_nheld = 1;
		*frame = buf + NET_HDR_LEN;
		*len = ulen - NET_HDR_LEN;
	} else {
		/* MRG_RXBUF: the frame continues in the next used buffers. */
		uint32_t total = 0;
		for (uint16_t i = 0; i < nbufs; i++) {
			uint32_t bid = used_elem(q, q->used_idx)[0];
			uint32_t blen = used_elem(q, q->used_idx)[1];
			q->used_idx++;
			if (bid >= q->size || blen > NET_BUF_SIZE) {
				n->broken = VIRTIO_E_USED;
				return -VIRTIO_E_USED;
			}
			n->rx_held[n->rx_nheld++] = (uint16_t)bid;
			const uint8_t *src = q->bufs + bid * NET_BUF_SIZE;
			if (i == 0) {
				src += NET_HDR_LEN;
				blen -= NET_HDR_LEN;
			}
			if (total + blen > NET_REASM_SIZE)
				blen = NET_REASM_SIZE - total;
			net_copy(net_reasm + total, src, blen);
			total += blen;
		}
		n->rx_merged++;
		*frame = net_reasm;
		*len = total;
	}
	n->rx_frames++;
	n->rx_bytes += *len;
	return 1;
}

void net_rx_done(struct net_dev *n)
{
	struct net_queue *q = &n->rx;
	if (!n->rx_nheld)
		return;
	/* Everything published before this point consumed? Then the device may be waiting. */
	bool starving = used_idx(q) == q->avail_idx;
	for (uint16_t i = 0; i < n->rx_nheld; i++) {
		uint16_t id = n->rx_held[i];
		q->desc[id].len = NET_BUF_SIZE;
		q->avail[2 + q->avail_idx % q->size] = id;
		barrier();
		q->avail[1] = ++q->avail_idx;
	}
	n->rx_reposted += n->rx_nheld;
	n->rx_nheld = 0;
	if (starving) {
		n->rx_reposted = 0;
		kick(n, RXQ);
	}
}

int net_rx_wait(struct net_dev *n, uint8_t **frame, uint32_t *len, uint64_t timeout_cycles)
{
	uint64_t start = rdtsc(), next_check = STATUS_CHECK_MS * tsc_khz();
	for (;;) {
		int r = net_rx_poll(n, frame, len);
		if (r)
			return r;
		uint64_t el = rdtsc() - start;
		if (el > next_check) {
			if (check_needs_reset(n))
				return -VIRTIO_E_NEEDS_RESET;
			next_check += STATUS_CHECK_MS * tsc_khz();
		}
		if (el > timeout_cycles)
			return 0;
		cpu_relax();
	}
}

int net_report(struct net_dev *n, const char *name)
{
	uint32_t isr = rd(n, R_INTERRUPT_STATUS);
	if (isr)
		wr(n, R_INTERRUPT_ACK, isr);
	uint32_t status = rd(n, R_STATUS);
	kprintf("TEST info %s rx_frames=%lu rx_bytes=%lu rx_merged=%lu tx_frames=%lu tx_bytes=%lu "
		"rx_kicks=%u tx_kicks=%u isr=%#x status=%#x\n",
		name, n->rx_frames, n->rx_bytes, n->rx_merged, n->tx_frames, n->tx_bytes,
		n->rx_kicks, n->tx_kicks, isr, status);
	if (status & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
		kprintf("TEST fail %s device-needs-reset\n", name);
		return 1;
	}
	if (n->broken) {
		kprintf("TEST fail %s %s\n", name, virtio_strerror(n->broken));
		return 1;
	}
	return 0;
}

uint64_t net_tsc_khz(const char **source)
{
	uint64_t khz = tsc_khz_cpuid(source);
	if (!khz) {
		khz = cmdline_get_u64(g_boot.cmdline, "squibtest.tsc_khz", 0);
		if (khz && source)
			*source = "cmdline";
	}
	return khz;
}

void net_fill_test_frame(uint8_t *f, uint32_t len, const uint8_t *dst, const uint8_t *src,
			 uint8_t tag, uint32_t seq)
{
	memcpy(f, dst, ETH_ALEN);
	memcpy(f + ETH_ALEN, src, ETH_ALEN);
	net_put_be16(f + 12, ETHERTYPE_TEST);
	f[14] = tag;
	net_put_be32(f + 15, seq);
	uint8_t v = (uint8_t)(NET_TEST_HDR * 7 + seq * 13 + tag);
	for (uint32_t k = NET_TEST_HDR; k < len; k++, v = (uint8_t)(v + 7))
		f[k] = v;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool net_cmdline_mac(const char *key, uint8_t out[ETH_ALEN])
{
	size_t len;
	const char *v = cmdline_get(g_boot.cmdline, key, &len);
	if (!v || len != 17)
		return false;
	for (int i = 0; i < ETH_ALEN; i++) {
		int hi = hexval(v[3 * i]), lo = hexval(v[3 * i + 1]);
		if (hi < 0 || lo < 0 || (i < 5 && v[3 * i + 2] != ':'))
			return false;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}
