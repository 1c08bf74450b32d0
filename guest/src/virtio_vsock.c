/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-vsock for the test guest: device bring-up with three queues, the
 * polled packet loop and a minimal stream connection layer (see virtio_vsock.h).
 *
 * Memory (all .noinit, never zeroed at boot; the driver initialises what it uses):
 * one 4 KiB page per queue (descriptors at +0, avail ring at +0x400, used ring at
 * +0x800: room for 64 entries), RX buffers and TX slots of header + 64 KiB, and
 * one 256 KiB receive ring per connection. Bulk transfers (sink mode, pattern-filled
 * TX slots) are in virtio_vsock_bulk.c.
 */
#include "virtio_vsock_int.h"

/* virtio-mmio registers (virtio 1.x §4.2.2). */
#define VS_REG_MAGIC            0x000
#define VS_REG_VERSION          0x004
#define VS_REG_DEV_FEATURES     0x010
#define VS_REG_DEV_FEATURES_SEL 0x014
#define VS_REG_DRV_FEATURES     0x020
#define VS_REG_DRV_FEATURES_SEL 0x024
#define VS_REG_QUEUE_SEL        0x030
#define VS_REG_QUEUE_NUM_MAX    0x034
#define VS_REG_QUEUE_NUM        0x038
#define VS_REG_QUEUE_READY      0x044
#define VS_REG_QUEUE_NOTIFY     0x050
#define VS_REG_INT_STATUS       0x060
#define VS_REG_INT_ACK          0x064
#define VS_REG_STATUS           0x070
#define VS_REG_QUEUE_DESC_LO    0x080
#define VS_REG_QUEUE_DESC_HI    0x084
#define VS_REG_QUEUE_DRIVER_LO  0x090
#define VS_REG_QUEUE_DRIVER_HI  0x094
#define VS_REG_QUEUE_DEVICE_LO  0x0A0
#define VS_REG_QUEUE_DEVICE_HI  0x0A4
#define VS_REG_CONFIG_GEN       0x0FC
#define VS_REG_CONFIG           0x100
#define VS_MAGIC                0x74726976

#define VQ_MAX_ENTRIES          64
#define VQ_AVAIL_OFF            0x400
#define VQ_USED_OFF             0x800

#define LOCAL_PORT_FIRST        49152u
#define LOCAL_PORT_LAST         0x3FFFFFFFu

static uint8_t vs_queue_pages[3][4096] __attribute__((noinit, aligned(4096)));
static uint8_t vs_rx_bufs[VSOCK_RX_BUFS][VSOCK_INT_BUF_STRIDE] __attribute__((noinit, aligned(4096)));
uint8_t vs_tx_bufs[VSOCK_TX_SLOTS][VSOCK_INT_BUF_STRIDE] __attribute__((noinit, aligned(4096)));
static uint8_t vs_rings[VSOCK_MAX_CONNS][VSOCK_BUF_ALLOC] __attribute__((noinit, aligned(4096)));
static volatile uint32_t vs_ev_bufs[VSOCK_EV_BUFS] __attribute__((aligned(64)));

/* Quadwords, then the tail: one emulated instruction moves 8 bytes, not 1. */
void vsock_int_copy(void *dst, const void *src, size_t n)
{
	size_t q = n / 8, b = n % 8;
	__asm__ volatile("rep movsq" : "+D"(dst), "+S"(src), "+c"(q) : : "memory");
	__asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(b) : : "memory");
}

uint32_t vsock_int_min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

static uint32_t rd(const struct vsock_dev *v, uint32_t reg)
{
	return mmio_read32(v->base + reg);
}

static void wr(const struct vsock_dev *v, uint32_t reg, uint32_t val)
{
	mmio_write32(v->base + reg, val);
}

const char *vsock_strerror(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case VSOCK_E_RESET: return "rst";
	case VSOCK_E_TIMEOUT: return "timeout";
	case VSOCK_E_NO_SLOT: return "no-connection-slot";
	case VSOCK_E_TRANSPORT_RESET: return "transport-reset";
	default: return virtio_strerror(err);
	}
}

/* ---- queues ---- */

static volatile uint16_t *used_idx_ptr(const struct vsock_vq *q)
{
	return (volatile uint16_t *)(q->used + 2);
}

static void used_elem(const struct vsock_vq *q, uint16_t slot, uint32_t *id, uint32_t *len)
{
	volatile uint32_t *e = (volatile uint32_t *)(q->used + 4 + 8 * (uint32_t)(slot % q->size));
	*id = e[0];
	*len = e[1];
}

static void notify(struct vsock_dev *v, uint16_t qi)
{
	wr(v, VS_REG_QUEUE_NOTIFY, qi);
	v->notifies++;
}

/* Publishes descriptor `id` (one buffer) on queue `q`; the caller notifies. */
static void post(struct vsock_vq *q, uint16_t id, uint64_t addr, uint32_t len, bool device_writes)
{
	q->desc[id].addr = addr;
	q->desc[id].len = len;
	q->desc[id].flags = device_writes ? VIRTQ_DESC_F_WRITE : 0;
	q->desc[id].next = 0;
	q->avail[2 + q->avail_idx % q->size] = id;
	barrier();                  /* x86: the ring entry is visible before the index */
	q->avail[1] = ++q->avail_idx;
	barrier();
}

static int setup_queue(struct vsock_dev *v, uint16_t qi, uint32_t want)
{
	struct vsock_vq *q = &v->vq[qi];
	wr(v, VS_REG_QUEUE_SEL, qi);
	if (rd(v, VS_REG_QUEUE_READY) != 0)
		return -VIRTIO_E_QUEUE;
	uint32_t max = rd(v, VS_REG_QUEUE_NUM_MAX);
	if (max == 0)
		return -VIRTIO_E_NO_QUEUE;
	uint32_t size = vsock_int_min32(vsock_int_min32(max, want), VQ_MAX_ENTRIES);
	while (size & (size - 1))
		size &= size - 1;
	uint8_t *page = vs_queue_pages[qi];
	memset(page, 0, sizeof(vs_queue_pages[0]));
	q->index = qi;
	q->size = (uint16_t)size;
	q->avail_idx = 0;
	q->used_idx = 0;
	q->desc = (volatile struct virtq_desc *)page;
	q->avail = (volatile uint16_t *)(page + VQ_AVAIL_OFF);
	q->used = page + VQ_USED_OFF;

	uint64_t desc = (uintptr_t)page, avail = desc + VQ_AVAIL_OFF, used = desc + VQ_USED_OFF;
	wr(v, VS_REG_QUEUE_NUM, size);
	wr(v, VS_REG_QUEUE_DESC_LO, (uint32_t)desc);
	wr(v, VS_REG_QUEUE_DESC_HI, (uint32_t)(desc >> 32));
	wr(v, VS_REG_QUEUE_DRIVER_LO, (uint32_t)avail);
	wr(v, VS_REG_QUEUE_DRIVER_HI, (uint32_t)(avail >> 32));
	wr(v, VS_REG_QUEUE_DEVICE_LO, (uint32_t)used);
	wr(v, VS_REG_QUEUE_DEVICE_HI, (uint32_t)(used >> 32));
	wr(v, VS_REG_QUEUE_READY, 1);
	return rd(v, VS_REG_QUEUE_READY) == 1 ? 0 : -VIRTIO_E_QUEUE;
}

static uint64_t read_cid(const struct vsock_dev *v)
{
	uint32_t gen, lo, hi, tries = 0;
	do {
		gen = rd(v, VS_REG_CONFIG_GEN);
		lo = rd(v, VS_REG_CONFIG);
		hi = rd(v, VS_REG_CONFIG + 4);
	} while (gen != rd(v, VS_REG_CONFIG_GEN) && ++tries < 100);
	return ((uint64_t)hi << 32) | lo;
}

static void set_status(struct vsock_dev *v, uint32_t bits)
{
	wr(v, VS_REG_STATUS, rd(v, VS_REG_STATUS) | bits);
}

static int device_init(struct vsock_dev *v)
{
	if (rd(v, VS_REG_MAGIC) != VS_MAGIC)
		return -VIRTIO_E_MAGIC;
	if (rd(v, VS_REG_VERSION) != 2)
		return -VIRTIO_E_LEGACY;
	if (rd(v, VS_REG_STATUS) != 0) {
		wr(v, VS_REG_STATUS, 0);
		uint64_t start = rdtsc(), budget = 1000 * tsc_khz();
		while (rd(v, VS_REG_STATUS) != 0) {
			if (rdtsc() - start > budget)
				return -VIRTIO_E_RESET;
			udelay(100);
		}
	}
	set_status(v, VIRTIO_STATUS_ACKNOWLEDGE);
	set_status(v, VIRTIO_STATUS_DRIVER);
	wr(v, VS_REG_DEV_FEATURES_SEL, 1);
	v->offered = (uint64_t)rd(v, VS_REG_DEV_FEATURES) << 32;
	wr(v, VS_REG_DEV_FEATURES_SEL, 0);
	v->offered |= rd(v, VS_REG_DEV_FEATURES);
	if (!(v->offered & FEATURE(VIRTIO_F_VERSION_1))) {
		set_status(v, VIRTIO_STATUS_FAILED);
		return -VIRTIO_E_NO_VERSION_1;
	}
	/* No EVENT_IDX, no IN_ORDER: the device notifies every time (we poll anyway) and
	 * returns TX slots in any order. */
	v->features = FEATURE(VIRTIO_F_VERSION_1);
	wr(v, VS_REG_DRV_FEATURES_SEL, 1);
	wr(v, VS_REG_DRV_FEATURES, (uint32_t)(v->features >> 32));
	wr(v, VS_REG_DRV_FEATURES_SEL, 0);
	wr(v, VS_REG_DRV_FEATURES, (uint32_t)v->features);
	set_status(v, VIRTIO_STATUS_FEATURES_OK);
	if (!(rd(v, VS_REG_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
		set_status(v, VIRTIO_STATUS_FAILED);
		return -VIRTIO_E_FEATURES;
	}
	static const uint32_t want[3] = { VSOCK_RX_BUFS, VSOCK_TX_SLOTS, VSOCK_EV_BUFS };
	for (uint16_t qi = 0; qi < 3; qi++) {
		int err = setup_queue(v, qi, want[qi]);
		if (err) {
			set_status(v, VIRTIO_STATUS_FAILED);
			return err;
		}
	}
	struct vsock_vq *rx = &v->vq[VQ_RX], *ev = &v->vq[VQ_EV];
	for (uint16_t i = 0; i < rx->size; i++)
		post(rx, i, (uintptr_t)vs_rx_bufs[i], VSOCK_HDR_SIZE + VSOCK_MAX_PAYLOAD, true);
	for (uint16_t i = 0; i < ev->size; i++) {
		vs_ev_bufs[i] = 0xFFFFFFFFu;
		post(ev, i, (uintptr_t)&vs_ev_bufs[i], sizeof(uint32_t), true);
	}
	v->tx_free = (1u << v->vq[VQ_TX].size) - 1;
	v->cid = read_cid(v);
	set_status(v, VIRTIO_STATUS_DRIVER_OK);
	if (rd(v, VS_REG_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
		return -VIRTIO_E_NEEDS_RESET;
	notify(v, VQ_RX);
	notify(v, VQ_EV);
	return 0;
}

int vsock_open(struct vsock_dev *v, const char *name)
{
	memset(v, 0, sizeof(*v));
	v->next_local_port = LOCAL_PORT_FIRST;
	struct virtio_mmio_dev m;
	if (virtio_find(VIRTIO_ID_VSOCK, 0, &m)) {
		kprintf("TEST fail %s no-virtio-vsock\n", name);
		return 1;
	}
	v->base = m.base;
	v->irq = m.irq;
	for (uint32_t i = 0; i < VSOCK_MAX_CONNS; i++)
		v->conns[i].ring = vs_rings[i];
	int err = device_init(v);
	if (err) {
		kprintf("TEST fail %s init %s base=%#lx status=%#x\n", name, virtio_strerror(err),
			m.base, rd(v, VS_REG_STATUS));
		return 1;
	}
	kprintf("TEST info virtio-vsock base=%#lx irq=%u cid=%lu features=%#lx offered=%#lx "
		"queues=%u/%u/%u\n", v->base, v->irq, v->cid, v->features, v->offered,
		v->vq[VQ_RX].size, v->vq[VQ_TX].size, v->vq[VQ_EV].size);
	return 0;
}

/* ---- TX ---- */

void vsock_int_kick_tx(struct vsock_dev *v)
{
	if (v->tx_kick) {
		v->tx_kick = false;
		notify(v, VQ_TX);
	}
}

void vsock_int_reclaim_tx(struct vsock_dev *v)
{
	struct vsock_vq *q = &v->vq[VQ_TX];
	uint16_t used = *used_idx_ptr(q);
	barrier();
	while (q->used_idx != used) {
		uint32_t id, len;
		used_elem(q, q->used_idx, &id, &len);
		q->used_idx++;
		if (id < q->size)
			v->tx_free |= 1u << id;
		else
			v->bad_pkts++;
	}
}

/* A free slot among `prefer` if there is one, else any free slot (or -1). */
int vsock_int_take_slot_pref(struct vsock_dev *v, uint32_t prefer)
{
	uint32_t pick = v->tx_free & prefer ? v->tx_free & prefer : v->tx_free;
	if (!pick)
		return -1;
	int s = __builtin_ctz(pick);
	v->tx_free &= ~(1u << s);
	return s;
}

/* A free slot, keeping the pattern-filled ones for vsock_send_pattern. */
static int take_slot(struct vsock_dev *v)
{
	return vsock_int_take_slot_pref(v, ~v->tx_pattern);
}

/* A free TX slot, waiting for the device to return one; -1 if it never does. */
static int wait_slot(struct vsock_dev *v)
{
	uint64_t start = rdtsc(), budget = virtio_io_timeout();
	for (;;) {
		vsock_int_reclaim_tx(v);
		int s = take_slot(v);
		if (s >= 0)
			return s;
		vsock_int_kick_tx(v);
		if (rdtsc() - start > budget) {
			v->broken = VIRTIO_E_TIMEOUT;
			kprintf("TEST info vsock tx-stalled slots_free=%#x\n", v->tx_free);
			return -1;
		}
		cpu_relax();
	}
}

/* Fills slot `s` with a packet and publishes it (notified by kick_tx). A NULL payload of
 * nonzero length is already in place (the slot's pattern). */
void vsock_int_submit(struct vsock_dev *v, int s, struct vsock_conn *c, uint32_t src_port,
		   uint32_t dst_port, uint16_t op, uint32_t flags, const void *payload, uint32_t len)
{
	struct vsock_hdr h = {
		.src_cid = v->cid,
		.dst_cid = VSOCK_HOST_CID,
		.src_port = src_port,
		.dst_port = dst_port,
		.len = len,
		.type = VSOCK_TYPE_STREAM,
		.op = op,
		.flags = flags,
		.buf_alloc = VSOCK_BUF_ALLOC,
		.fwd_cnt = c ? c->fwd_cnt : 0,
	};
	if (c)
		c->last_fwd_cnt_sent = c->fwd_cnt;
	uint8_t *buf = vs_tx_bufs[s];
	vsock_int_copy(buf, &h, sizeof(h));
	if (len && payload) {
		vsock_int_copy(buf + VSOCK_HDR_SIZE, payload, len);
		v->tx_pattern &= ~(1u << s);
	}
	post(&v->vq[VQ_TX], (uint16_t)s, (uintptr_t)buf, VSOCK_HDR_SIZE + len, false);
	v->tx_kick = true;
	v->tx_pkts++;
}

/* A packet without payload (control), waiting for a slot if needed. */
static void send_ctrl(struct vsock_dev *v, struct vsock_conn *c, uint32_t src_port,
		      uint32_t dst_port, uint16_t op, uint32_t flags)
{
	if (v->broken)
		return;
	int s = wait_slot(v);
	if (s < 0)
		return;
	if (op == VSOCK_OP_RST)
		v->rst_sent++;
	vsock_int_submit(v, s, c, src_port, dst_port, op, flags, NULL, 0);
}

static void conn_ctrl(struct vsock_dev *v, struct vsock_conn *c, uint16_t op, uint32_t flags)
{
	send_ctrl(v, c, c->local_port, c->peer_port, op, flags);
}

/* ---- connections ---- */

static struct vsock_conn *find_conn(struct vsock_dev *v, uint32_t local, uint32_t peer)
{
	for (uint32_t i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &v->conns[i];
		if (c->state != VSOCK_FREE && c->local_port == local && c->peer_port == peer)
			return c;
	}
	return NULL;
}

static struct vsock_conn *alloc_conn(struct vsock_dev *v)
{
	for (uint32_t i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &v->conns[i];
		if (c->state == VSOCK_FREE) {
			uint8_t *ring = c->ring;
			memset(c, 0, sizeof(*c));
			c->ring = ring;
			return c;
		}
	}
	return NULL;
}

static void free_conn(struct vsock_conn *c)
{
	c->state = VSOCK_FREE;
	c->pending_accept = false;
}

static bool listening(const struct vsock_dev *v, uint32_t port)
{
	for (uint32_t i = 0; i < v->nlisten; i++)
		if (v->listen_ports[i] == port)
			return true;
	return false;
}

int vsock_listen(struct vsock_dev *v, uint32_t port)
{
	if (listening(v, port))
		return 0;
	if (v->nlisten >= VSOCK_MAX_LISTEN)
		return -VSOCK_E_NO_SLOT;
	v->listen_ports[v->nlisten++] = port;
	return 0;
}

struct vsock_conn *vsock_accept(struct vsock_dev *v)
{
	for (uint32_t i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &v->conns[i];
		if (c->state != VSOCK_FREE && c->pending_accept) {
			c->pending_accept = false;
			return c;
		}
	}
	return NULL;
}

static void ring_put(struct vsock_conn *c, const uint8_t *data, uint32_t n)
{
	uint32_t room = VSOCK_BUF_ALLOC - c->ring_len;
	if (n > room) {
		c->overflow += n - room;
		n = room;
	}
	uint32_t tail = (c->ring_head + c->ring_len) % VSOCK_BUF_ALLOC;
	uint32_t first = vsock_int_min32(n, VSOCK_BUF_ALLOC - tail);
	vsock_int_copy(c->ring + tail, data, first);
	vsock_int_copy(c->ring, data + first, n - first);
	c->ring_len += n;
	c->rx_bytes += n;
}

/* Sends a CREDIT_UPDATE once a quarter of the ring was consumed since the host last heard. */
void vsock_int_credit_check(struct vsock_dev *v, struct vsock_conn *c)
{
	if ((c->state == VSOCK_ESTABLISHED || c->state == VSOCK_CLOSING) &&
	    !(c->peer_shutdown & VSOCK_SHUTDOWN_SEND) &&
	    c->fwd_cnt - c->last_fwd_cnt_sent >= VSOCK_BUF_ALLOC / 4) {
		conn_ctrl(v, c, VSOCK_OP_CREDIT_UPDATE, 0);
		vsock_int_kick_tx(v);
	}
}

static void accept_request(struct vsock_dev *v, const struct vsock_hdr *h)
{
	struct vsock_conn *c = listening(v, h->dst_port) ? alloc_conn(v) : NULL;
	if (!c) {
		send_ctrl(v, NULL, h->dst_port, h->src_port, VSOCK_OP_RST, 0);
		return;
	}
	c->state = VSOCK_ESTABLISHED;
	c->local_port = h->dst_port;
	c->peer_port = h->src_port;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->pending_accept = true;
	conn_ctrl(v, c, VSOCK_OP_RESPONSE, 0);
}

static void handle_pkt(struct vsock_dev *v, const uint8_t *buf, uint32_t used_len)
{
	struct vsock_hdr h;
	if (used_len < VSOCK_HDR_SIZE) {
		v->bad_pkts++;
		return;
	}
	vsock_int_copy(&h, buf, sizeof(h));
	if (h.len > used_len - VSOCK_HDR_SIZE || h.len > VSOCK_MAX_PAYLOAD) {
		v->bad_pkts++;
		return;
	}
	v->rx_pkts++;
	if (h.src_cid != VSOCK_HOST_CID || h.dst_cid != v->cid || h.type != VSOCK_TYPE_STREAM) {
		v->dropped++;
		return;
	}
	struct vsock_conn *c = find_conn(v, h.dst_port, h.src_port);
	if (!c) {
		if (h.op == VSOCK_OP_REQUEST)
			accept_request(v, &h);
		else if (h.op != VSOCK_OP_RST)
			send_ctrl(v, NULL, h.dst_port, h.src_port, VSOCK_OP_RST, 0);
		return;
	}
	c->peer_buf_alloc = h.buf_alloc;
	c->peer_fwd_cnt = h.fwd_cnt;
	switch (h.op) {
	case VSOCK_OP_RESPONSE:
		if (c->state == VSOCK_CONNECTING) {
			c->state = VSOCK_ESTABLISHED;
		} else if (c->state != VSOCK_CLOSED) {
			conn_ctrl(v, c, VSOCK_OP_RST, 0);
			c->state = VSOCK_CLOSED;
		}
		break;
	case VSOCK_OP_RST:
		c->got_rst = true;
		c->state = VSOCK_CLOSED;
		break;
	case VSOCK_OP_SHUTDOWN:
		c->peer_shutdown |= h.flags & VSOCK_SHUTDOWN_BOTH;
		if (c->peer_shutdown == VSOCK_SHUTDOWN_BOTH && c->state != VSOCK_CLOSED) {
			/* Both sides done: reset it (as Linux does); unread data stays readable. */
			conn_ctrl(v, c, VSOCK_OP_RST, 0);
			c->state = VSOCK_CLOSED;
		}
		break;
	case VSOCK_OP_RW:
		if ((c->state != VSOCK_ESTABLISHED && c->state != VSOCK_CLOSING) ||
		    (c->peer_shutdown & VSOCK_SHUTDOWN_SEND))
			v->dropped++;
		else if (c->sink)
			vsock_int_sink_data(v, c, buf + VSOCK_HDR_SIZE, h.len);
		else
			ring_put(c, buf + VSOCK_HDR_SIZE, h.len);
		break;
	case VSOCK_OP_CREDIT_UPDATE:
		break;
	case VSOCK_OP_CREDIT_REQUEST:
		if (c->state == VSOCK_ESTABLISHED || c->state == VSOCK_CLOSING)
			conn_ctrl(v, c, VSOCK_OP_CREDIT_UPDATE, 0);
		break;
	default:
		v->dropped++;
		break;
	}
}

static void transport_reset(struct vsock_dev *v)
{
	kprintf("TEST info vsock transport-reset\n");
	v->transport_resets++;
	for (uint32_t i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &v->conns[i];
		if (c->state == VSOCK_FREE)
			continue;
		if (c->pending_accept) {
			free_conn(c);       /* never handed out */
			continue;
		}
		c->state = VSOCK_CLOSED;
		c->transport_reset = true;
	}
	v->cid = read_cid(v);
}

/* ---- polling ---- */

static void poll_event(struct vsock_dev *v)
{
	struct vsock_vq *q = &v->vq[VQ_EV];
	uint16_t used = *used_idx_ptr(q);
	barrier();
	bool reposted = false;
	while (q->used_idx != used) {
		uint32_t id, len;
		used_elem(q, q->used_idx, &id, &len);
		q->used_idx++;
		if (id >= q->size) {
			v->bad_pkts++;
			continue;
		}
		uint32_t ev = vs_ev_bufs[id];
		if (len >= sizeof(uint32_t) && ev == VSOCK_EVENT_TRANSPORT_RESET)
			transport_reset(v);
		else
			kprintf("TEST info vsock event id=%u len=%u\n", ev, len);
		vs_ev_bufs[id] = 0xFFFFFFFFu;
		post(q, (uint16_t)id, (uintptr_t)&vs_ev_bufs[id], sizeof(uint32_t), true);
		reposted = true;
	}
	if (reposted)
		notify(v, VQ_EV);   /* the device's cue that the event was seen */
}

static void poll_rx(struct vsock_dev *v)
{
	struct vsock_vq *q = &v->vq[VQ_RX];
	uint16_t used = *used_idx_ptr(q);
	barrier();
	for (uint32_t budget = q->size; q->used_idx != used && budget; budget--) {
		uint32_t id, len;
		used_elem(q, q->used_idx, &id, &len);
		q->used_idx++;
		if (id >= q->size) {
			v->bad_pkts++;
			continue;
		}
		handle_pkt(v, vs_rx_bufs[id], vsock_int_min32(len, VSOCK_HDR_SIZE + VSOCK_MAX_PAYLOAD));
		v->rx_repost[v->rx_repost_n++] = (uint16_t)id;
	}
	/* Re-post in batches: the device still holds buffers unless every posted one came
	 * back, so a notification is needed only then, or once half the ring is ours. */
	uint16_t device_owned = (uint16_t)(q->avail_idx - q->used_idx);
	if (v->rx_repost_n && (device_owned == 0 || v->rx_repost_n >= q->size / 2u)) {
		for (uint32_t i = 0; i < v->rx_repost_n; i++) {
			uint16_t id = v->rx_repost[i];
			post(q, id, (uintptr_t)vs_rx_bufs[id], VSOCK_HDR_SIZE + VSOCK_MAX_PAYLOAD, true);
		}
		v->rx_repost_n = 0;
		notify(v, VQ_RX);
	}
}

void vsock_poll(struct vsock_dev *v)
{
	if (v->broken)
		return;
	poll_event(v);
	vsock_int_reclaim_tx(v);
	poll_rx(v);
	vsock_int_kick_tx(v);
}

/* ---- data ---- */

uint32_t vsock_send(struct vsock_dev *v, struct vsock_conn *c, const void *buf, uint32_t len)
{
	if (v->broken || c->state != VSOCK_ESTABLISHED || (c->peer_shutdown & VSOCK_SHUTDOWN_RCV))
		return 0;
	const uint8_t *p = buf;
	uint32_t sent = 0;
	vsock_int_reclaim_tx(v);
	while (sent < len) {
		uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
		if (in_flight >= c->peer_buf_alloc)
			break;
		uint32_t chunk = vsock_int_min32(vsock_int_min32(len - sent, c->peer_buf_alloc - in_flight),
				       VSOCK_MAX_PAYLOAD);
		int s = take_slot(v);
		if (s < 0) {
			vsock_int_reclaim_tx(v);
			s = take_slot(v);
			if (s < 0)
				break;
		}
		vsock_int_submit(v, s, c, c->local_port, c->peer_port, VSOCK_OP_RW, 0, p + sent, chunk);
		c->tx_cnt += chunk;
		c->tx_bytes += chunk;
		sent += chunk;
	}
	vsock_int_kick_tx(v);
	return sent;
}

uint32_t vsock_peek(const struct vsock_conn *c, const uint8_t **data)
{
	if (!c->ring_len)
		return 0;
	*data = c->ring + c->ring_head;
	return vsock_int_min32(c->ring_len, VSOCK_BUF_ALLOC - c->ring_head);
}

void vsock_consume(struct vsock_dev *v, struct vsock_conn *c, uint32_t n)
{
	n = vsock_int_min32(n, c->ring_len);
	c->ring_head = (c->ring_head + n) % VSOCK_BUF_ALLOC;
	c->ring_len -= n;
	c->fwd_cnt += n;
	vsock_int_credit_check(v, c);
}

uint32_t vsock_recv(struct vsock_dev *v, struct vsock_conn *c, void *buf, uint32_t len)
{
	uint8_t *out = buf;
	uint32_t got = 0;
	const uint8_t *data;
	uint32_t n;
	while (got < len && (n = vsock_peek(c, &data)) != 0) {
		n = vsock_int_min32(n, len - got);
		vsock_int_copy(out + got, data, n);
		vsock_consume(v, c, n);
		got += n;
	}
	return got;
}

bool vsock_peer_done(const struct vsock_conn *c)
{
	return c->state == VSOCK_CLOSED || (c->peer_shutdown & VSOCK_SHUTDOWN_SEND);
}

int vsock_connect(struct vsock_dev *v, uint32_t port, uint64_t timeout_cycles,
		  struct vsock_conn **out)
{
	if (v->broken)
		return -VIRTIO_E_BROKEN;
	struct vsock_conn *c = alloc_conn(v);
	if (!c)
		return -VSOCK_E_NO_SLOT;
	c->state = VSOCK_CONNECTING;
	c->local_port = v->next_local_port;
	c->peer_port = port;
	v->next_local_port = v->next_local_port >= LOCAL_PORT_LAST ? LOCAL_PORT_FIRST
								     : v->next_local_port + 1;
	conn_ctrl(v, c, VSOCK_OP_REQUEST, 0);
	vsock_int_kick_tx(v);
	uint64_t start = rdtsc();
	while (c->state == VSOCK_CONNECTING && !v->broken) {
		if (rdtsc() - start > timeout_cycles) {
			conn_ctrl(v, c, VSOCK_OP_RST, 0);
			vsock_int_kick_tx(v);
			free_conn(c);
			return -VSOCK_E_TIMEOUT;
		}
		vsock_poll(v);
		cpu_relax();
	}
	if (c->state == VSOCK_ESTABLISHED) {
		*out = c;
		return 0;
	}
	int err = c->transport_reset ? -VSOCK_E_TRANSPORT_RESET
		  : c->got_rst ? -VSOCK_E_RESET : v->broken ? -v->broken : -VSOCK_E_TIMEOUT;
	free_conn(c);
	return err;
}

int vsock_close(struct vsock_dev *v, struct vsock_conn *c, uint64_t timeout_cycles)
{
	int ret = 0;
	if (c->state == VSOCK_ESTABLISHED) {
		conn_ctrl(v, c, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_BOTH);
		c->state = VSOCK_CLOSING;
		vsock_int_kick_tx(v);
		uint64_t start = rdtsc();
		while (c->state == VSOCK_CLOSING && !v->broken) {
			if (rdtsc() - start > timeout_cycles) {
				conn_ctrl(v, c, VSOCK_OP_RST, 0);
				vsock_int_kick_tx(v);
				ret = -VSOCK_E_TIMEOUT;
				break;
			}
			vsock_poll(v);
			cpu_relax();
		}
	} else if (c->state != VSOCK_CLOSED) {
		conn_ctrl(v, c, VSOCK_OP_RST, 0);
		vsock_int_kick_tx(v);
	}
	free_conn(c);
	return ret;
}

void vsock_release(struct vsock_dev *v, struct vsock_conn *c)
{
	if (c->state != VSOCK_CLOSED && c->state != VSOCK_FREE) {
		conn_ctrl(v, c, VSOCK_OP_RST, 0);
		vsock_int_kick_tx(v);
	}
	free_conn(c);
}

int vsock_report(const char *name, struct vsock_dev *v)
{
	uint32_t isr = rd(v, VS_REG_INT_STATUS);
	if (isr)
		wr(v, VS_REG_INT_ACK, isr);
	uint32_t status = rd(v, VS_REG_STATUS);
	kprintf("TEST info %s vsock rx_pkts=%lu tx_pkts=%lu notifies=%lu rst_sent=%lu dropped=%lu "
		"bad=%lu transport_resets=%u status=%#x\n", name, v->rx_pkts, v->tx_pkts, v->notifies,
		v->rst_sent, v->dropped, v->bad_pkts, v->transport_resets, status);
	if (status & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
		kprintf("TEST fail %s device-needs-reset\n", name);
		return 1;
	}
	if (v->broken) {
		kprintf("TEST fail %s device-unusable %s\n", name, virtio_strerror(v->broken));
		return 1;
	}
	return 0;
}
