/* SPDX-License-Identifier: Apache-2.0 */
/* Internals shared by virtio_vsock.c and virtio_vsock_bulk.c (not for scenarios). */
#ifndef SQUIB_GUEST_VIRTIO_VSOCK_INT_H
#define SQUIB_GUEST_VIRTIO_VSOCK_INT_H

#include "virtio_vsock.h"

#define VQ_RX                   0
#define VQ_TX                   1
#define VQ_EV                   2
/* One RX buffer or TX slot: header + 64 KiB payload, rounded up to pages. */
#define VSOCK_INT_BUF_STRIDE    (((VSOCK_HDR_SIZE + VSOCK_MAX_PAYLOAD) + 4095) & ~4095)

extern uint8_t vs_tx_bufs[VSOCK_TX_SLOTS][VSOCK_INT_BUF_STRIDE];

uint32_t vsock_int_min32(uint32_t a, uint32_t b);
/* Quadword copy (rep movsq + tail). */
void vsock_int_copy(void *dst, const void *src, size_t n);
/* Notifies TX if descriptors were published since the last notification. */
void vsock_int_kick_tx(struct vsock_dev *v);
/* Takes back the TX slots the device returned. */
void vsock_int_reclaim_tx(struct vsock_dev *v);
/* A free TX slot among `prefer` if any, else any free slot, else -1. */
int vsock_int_take_slot_pref(struct vsock_dev *v, uint32_t prefer);
/* Fills slot `s` (header, and the payload unless it is NULL: already in place) and
 * publishes it. */
void vsock_int_submit(struct vsock_dev *v, int s, struct vsock_conn *c, uint32_t src_port,
		      uint32_t dst_port, uint16_t op, uint32_t flags, const void *payload,
		      uint32_t len);
/* CREDIT_UPDATE once a quarter of the receive ring was consumed since the host last heard. */
void vsock_int_credit_check(struct vsock_dev *v, struct vsock_conn *c);
/* Sink mode: an RW payload is counted, sampled and consumed. */
void vsock_int_sink_data(struct vsock_dev *v, struct vsock_conn *c, const uint8_t *data,
			 uint32_t n);

#endif
