/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-vsock bulk data without per-byte guest work (see virtio_vsock.h): sink mode for
 * receiving, pattern-filled TX slots for sending, and the stream pattern itself.
 */
#include "virtio_vsock_int.h"

/* Sink mode: count, sample the first and last byte, consume at once. */
void vsock_int_sink_data(struct vsock_dev *v, struct vsock_conn *c, const uint8_t *data, uint32_t n)
{
	if (!n)
		return;
	if (data[0] != vsock_pattern_byte(c->sink_bytes, c->sink_seed) ||
	    data[n - 1] != vsock_pattern_byte(c->sink_bytes + n - 1, c->sink_seed)) {
		if (!c->sink_bad)
			c->sink_bad_offset = c->sink_bytes;
		c->sink_bad++;
	}
	c->sink_bytes += n;
	c->rx_bytes += n;
	c->fwd_cnt += n;
	vsock_int_credit_check(v, c);
}

void vsock_sink(struct vsock_conn *c, uint8_t seed)
{
	c->sink = true;
	c->sink_seed = seed;
	c->sink_bytes = 0;
}

void vsock_pattern_fill(struct vsock_pattern *p, uint8_t *buf, uint32_t len)
{
	uint32_t page = (uint32_t)(p->off & 4095), m = page % 251;
	for (uint32_t i = 0; i < len; i++) {
		buf[i] = (uint8_t)(m + p->seed);
		if (++page == 4096)
			page = m = 0;
		else if (++m == 251)
			m = 0;
	}
	p->off += len;
}

uint32_t vsock_pattern_check(struct vsock_pattern *p, const uint8_t *buf, uint32_t len)
{
	uint32_t page = (uint32_t)(p->off & 4095), m = page % 251, i;
	for (i = 0; i < len; i++) {
		if (buf[i] != (uint8_t)(m + p->seed))
			break;
		if (++page == 4096)
			page = m = 0;
		else if (++m == 251)
			m = 0;
	}
	p->off += i;
	return i;
}

void vsock_pattern_slots(struct vsock_dev *v, uint8_t seed)
{
	uint32_t all = (1u << v->vq[VQ_TX].size) - 1;
	uint64_t start = rdtsc(), budget = virtio_io_timeout();
	while (v->tx_free != all && rdtsc() - start < budget) {
		vsock_int_kick_tx(v);
		vsock_int_reclaim_tx(v);
	}
	if (v->tx_free != all)
		return;                 /* slots still in flight: leave them alone */
	uint8_t *page = vs_tx_bufs[0] + VSOCK_HDR_SIZE;
	struct vsock_pattern p = { 0, seed };
	vsock_pattern_fill(&p, page, 4096);
	for (uint32_t s = 0; s < v->vq[VQ_TX].size; s++)
		for (uint32_t off = 0; off < VSOCK_MAX_PAYLOAD; off += 4096)
			if (s || off)
				vsock_int_copy(vs_tx_bufs[s] + VSOCK_HDR_SIZE + off, page, 4096);
	v->tx_pattern = all;
	v->tx_pattern_seed = seed;
}

uint32_t vsock_send_pattern(struct vsock_dev *v, struct vsock_conn *c, uint64_t len)
{
	if (v->broken || c->state != VSOCK_ESTABLISHED || (c->peer_shutdown & VSOCK_SHUTDOWN_RCV))
		return 0;
	uint32_t sent = 0;
	vsock_int_reclaim_tx(v);
	while (sent < len) {
		uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
		if (in_flight >= c->peer_buf_alloc)
			break;
		uint64_t rest = len - sent;
		uint32_t chunk = vsock_int_min32(c->peer_buf_alloc - in_flight, VSOCK_MAX_PAYLOAD);
		if (chunk >= rest)
			chunk = (uint32_t)rest;
		else
			chunk &= ~4095u;    /* the next packet starts on a 4 KiB stream offset */
		if (!chunk)
			break;
		if (!(v->tx_free & v->tx_pattern))
			vsock_int_reclaim_tx(v);
		if (!(v->tx_free & v->tx_pattern))
			break;
		int s = vsock_int_take_slot_pref(v, v->tx_pattern);
		vsock_int_submit(v, s, c, c->local_port, c->peer_port, VSOCK_OP_RW, 0, NULL, chunk);
		c->tx_cnt += chunk;
		c->tx_bytes += chunk;
		c->pattern_sent += chunk;
		sent += chunk;
	}
	vsock_int_kick_tx(v);
	return sent;
}
