/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-vsock driver for the test guest (virtio 1.x over virtio-mmio, polled).
 *
 * Three split virtqueues (RX 0, TX 1, event 2) in their own pages; the device is
 * set up here rather than through virtio_init(), which knows one queue only.
 *   RX     VSOCK_RX_BUFS buffers of header + 64 KiB, always posted; re-posted in
 *          batches (see vsock_poll) so a busy stream costs few notifications.
 *   TX     VSOCK_TX_SLOTS slots, each one descriptor holding header + payload
 *          (<= 64 KiB); a slot is free again once the device returns it.
 *   event  VSOCK_EV_BUFS 4-byte buffers; VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
 *          drops every connection, prints `TEST info vsock transport-reset`,
 *          re-reads guest_cid, re-posts the buffer and notifies the event
 *          queue (which is how the device learns the reset was seen).
 *
 * Connection layer: stream sockets only, peer always the host (CID 2). The
 * guest accepts host REQUESTs on its listening ports (RESPONSE at once), opens
 * connections to host ports (REQUEST, wait for RESPONSE or RST), moves data with
 * virtio-vsock credit flow control, and closes with SHUTDOWN -> RST.
 *   our side   buf_alloc = VSOCK_BUF_ALLOC = the connection's receive ring;
 *              fwd_cnt = bytes the application consumed from it. A
 *              CREDIT_UPDATE goes out once a quarter of the ring was consumed
 *              since the host last heard fwd_cnt (every packet carries it).
 *   peer side  we send at most peer_buf_alloc - (tx_cnt - peer_fwd_cnt).
 * Data the host sends beyond its credit is dropped and counted (`overflow`).
 * No interrupts: every call that waits polls the used rings, bounded by TSC time.
 *
 * Bulk data without per-byte guest work (on a nested kvm_pvm host every guest
 * instruction is emulated, and a byte loop runs at well under 1 MiB/s):
 *   - a connection in sink mode (vsock_sink) counts incoming bytes, checks the
 *     first and last byte of each packet against the stream pattern and consumes
 *     them at once, without copying;
 *   - vsock_send_pattern sends the pattern from TX slots filled once
 *     (vsock_pattern_slots), in packets starting at multiples of 4 KiB.
 * The stream pattern: byte i of stream `seed` is (i % 4096) % 251 + seed (mod 256).
 */
#ifndef SQUIB_GUEST_VIRTIO_VSOCK_H
#define SQUIB_GUEST_VIRTIO_VSOCK_H

#include "virtio_drv.h"

#define VIRTIO_ID_VSOCK                 19
#define VSOCK_HOST_CID                  2

#define VSOCK_OP_REQUEST                1
#define VSOCK_OP_RESPONSE               2
#define VSOCK_OP_RST                    3
#define VSOCK_OP_SHUTDOWN               4
#define VSOCK_OP_RW                     5
#define VSOCK_OP_CREDIT_UPDATE          6
#define VSOCK_OP_CREDIT_REQUEST         7
#define VSOCK_SHUTDOWN_RCV              1
#define VSOCK_SHUTDOWN_SEND             2
#define VSOCK_SHUTDOWN_BOTH             3
#define VSOCK_TYPE_STREAM               1
#define VSOCK_EVENT_TRANSPORT_RESET     0

#define VSOCK_HDR_SIZE                  44
#define VSOCK_MAX_PAYLOAD               (64 * 1024)
#define VSOCK_BUF_ALLOC                 (256 * 1024)    /* per-connection receive ring */
#define VSOCK_MAX_CONNS                 4
#define VSOCK_MAX_LISTEN                4
#define VSOCK_RX_BUFS                   16
#define VSOCK_TX_SLOTS                  8
#define VSOCK_EV_BUFS                   4

struct vsock_hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;
	uint32_t fwd_cnt;
} __attribute__((packed));

_Static_assert(sizeof(struct vsock_hdr) == VSOCK_HDR_SIZE, "virtio_vsock_hdr is 44 bytes");

/* Errors (negative return values), after the VIRTIO_E_* range. */
enum {
	VSOCK_E_RESET = 64,         /* the host answered RST (nobody listening, or killed) */
	VSOCK_E_TIMEOUT,            /* no answer in time */
	VSOCK_E_NO_SLOT,            /* all VSOCK_MAX_CONNS connections in use */
	VSOCK_E_TRANSPORT_RESET,    /* a transport reset dropped the connection */
};

enum vsock_state {
	VSOCK_FREE = 0,
	VSOCK_CONNECTING,           /* REQUEST sent, waiting for RESPONSE */
	VSOCK_ESTABLISHED,
	VSOCK_CLOSING,              /* we sent SHUTDOWN, waiting for the host's RST */
	VSOCK_CLOSED,               /* RST in either direction, or both sides shut down */
};

struct vsock_conn {
	uint32_t state;             /* enum vsock_state */
	uint32_t local_port;
	uint32_t peer_port;
	bool pending_accept;        /* host-initiated, not yet returned by vsock_accept() */
	bool got_rst;               /* the host reset it */
	bool transport_reset;       /* dropped by a transport reset */
	uint32_t peer_shutdown;     /* VSOCK_SHUTDOWN_* flags received */
	/* Our receive side. */
	uint32_t fwd_cnt;           /* bytes consumed by the application */
	uint32_t last_fwd_cnt_sent; /* fwd_cnt in the last packet we sent */
	uint64_t rx_bytes;          /* bytes received (64-bit total) */
	uint32_t overflow;          /* bytes dropped: the host exceeded its credit */
	uint8_t *ring;              /* VSOCK_BUF_ALLOC bytes */
	uint32_t ring_head;         /* offset of the first unread byte */
	uint32_t ring_len;          /* unread bytes */
	/* The host's receive side. */
	uint32_t peer_buf_alloc;
	uint32_t peer_fwd_cnt;
	uint32_t tx_cnt;            /* bytes we sent */
	uint64_t tx_bytes;
	/* Sink mode (vsock_sink). */
	bool sink;
	uint8_t sink_seed;
	uint64_t sink_bytes;        /* stream offset of the next sunk byte */
	uint64_t sink_bad;          /* sampled bytes that did not match */
	uint64_t sink_bad_offset;   /* the first of them */
	uint64_t pattern_sent;      /* bytes sent by vsock_send_pattern */
};

struct vsock_vq {
	uint16_t index;
	uint16_t size;
	uint16_t avail_idx;         /* next avail->idx we publish */
	uint16_t used_idx;          /* used->idx consumed up to */
	volatile struct virtq_desc *desc;
	volatile uint16_t *avail;   /* flags, idx, ring[size] */
	volatile uint8_t *used;     /* flags, idx, ring[size] of {id, len} */
};

struct vsock_dev {
	uint64_t base;
	uint32_t irq;
	uint64_t offered;
	uint64_t features;
	uint64_t cid;
	struct vsock_vq vq[3];
	uint32_t tx_free;           /* bitmap of free TX slots */
	uint32_t tx_pattern;        /* bitmap of TX slots whose payload holds the pattern */
	uint8_t tx_pattern_seed;
	bool tx_kick;               /* TX descriptors published, not yet notified */
	uint16_t rx_repost[VSOCK_RX_BUFS];
	uint32_t rx_repost_n;       /* RX buffers consumed, not yet re-posted */
	uint32_t listen_ports[VSOCK_MAX_LISTEN];
	uint32_t nlisten;
	struct vsock_conn conns[VSOCK_MAX_CONNS];
	uint32_t next_local_port;
	uint32_t transport_resets;
	int broken;                 /* VIRTIO_E_* once the device is unusable */
	/* Counters. */
	uint64_t rx_pkts, tx_pkts, notifies, rst_sent, dropped, bad_pkts;
};

/* Finds the first virtio-vsock device and brings it up (queues filled, CID read).
 * Prints `TEST info virtio-vsock ...`, or `TEST fail <name> ...` and returns nonzero. */
int vsock_open(struct vsock_dev *v, const char *name);
/* Processes every completed RX, TX and event buffer; sends what the packets call for. */
void vsock_poll(struct vsock_dev *v);
int vsock_listen(struct vsock_dev *v, uint32_t port);
/* A connection the host opened to a listening port since the last call, or NULL. */
struct vsock_conn *vsock_accept(struct vsock_dev *v);
/* Connects to host port `port`: 0 and *out, or -VSOCK_E_RESET / -VSOCK_E_TIMEOUT / ... */
int vsock_connect(struct vsock_dev *v, uint32_t port, uint64_t timeout_cycles,
		  struct vsock_conn **out);
/* Queues up to `len` bytes as the host's credit and free TX slots allow; returns bytes
 * queued (0 when the connection cannot send any more). Never waits. */
uint32_t vsock_send(struct vsock_dev *v, struct vsock_conn *c, const void *buf, uint32_t len);
/* Contiguous unread bytes at *data (0 if none). */
uint32_t vsock_peek(const struct vsock_conn *c, const uint8_t **data);
/* Marks `n` peeked bytes consumed (returns credit to the host). */
void vsock_consume(struct vsock_dev *v, struct vsock_conn *c, uint32_t n);
/* Copies up to `len` unread bytes out; returns how many. */
uint32_t vsock_recv(struct vsock_dev *v, struct vsock_conn *c, void *buf, uint32_t len);
/* The host will send no more data (it shut down its sending side, or the connection died). */
bool vsock_peer_done(const struct vsock_conn *c);
/* SHUTDOWN(both), wait for the host's RST (else send RST), free. 0 if the host answered. */
int vsock_close(struct vsock_dev *v, struct vsock_conn *c, uint64_t timeout_cycles);
/* Frees a connection, resetting it first unless it is already closed. */
void vsock_release(struct vsock_dev *v, struct vsock_conn *c);
/* `TEST info <name> vsock rx_pkts=... tx_pkts=... ...`; `TEST fail <name> device-needs-reset`
 * (returning 1) if the device asked for a reset. */
int vsock_report(const char *name, struct vsock_dev *v);
const char *vsock_strerror(int err);

/* Byte i of pattern stream `seed` (shared with the host tests). */
static inline uint8_t vsock_pattern_byte(uint64_t i, uint8_t seed)
{
	return (uint8_t)((i & 4095) % 251 + seed);
}
struct vsock_pattern {
	uint64_t off;               /* stream offset of the next byte */
	uint8_t seed;
};
void vsock_pattern_fill(struct vsock_pattern *p, uint8_t *buf, uint32_t len);
/* Checks `len` bytes against the pattern; returns the index of the first mismatch or len. */
uint32_t vsock_pattern_check(struct vsock_pattern *p, const uint8_t *buf, uint32_t len);
/* Incoming data is counted, sampled against pattern `seed` and dropped from now on. */
void vsock_sink(struct vsock_conn *c, uint8_t seed);
/* Fills every TX slot's payload with 64 KiB of pattern `seed` (slow: do it before timing). */
void vsock_pattern_slots(struct vsock_dev *v, uint8_t seed);
/* Sends up to `len` more bytes of the pattern prepared by vsock_pattern_slots, continuing
 * the stream at c->pattern_sent; returns bytes queued. Never waits. */
uint32_t vsock_send_pattern(struct vsock_dev *v, struct vsock_conn *c, uint64_t len);

#endif
