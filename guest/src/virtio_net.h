/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Polled virtio-net driver for the test guest (virtio 1.x over virtio-mmio).
 *
 * One device per boot. Queue 0 (RX) is pre-filled with device-writable
 * NET_BUF_SIZE buffers, one descriptor each; queue 1 (TX) has one slot per
 * descriptor, each a NET_BUF_SIZE buffer holding the 12-byte virtio_net_hdr_v1
 * and the frame. Both rings ask for no interrupts (VIRTQ_AVAIL_F_NO_INTERRUPT);
 * completions are found by polling the used rings. Features: VERSION_1
 * (required), MAC (if offered), MRG_RXBUF (if offered, unless
 * squibtest.net_mrg=0). No checksum or segmentation offloads.
 *
 * Notifications are batched: TX kicks every NET_TX_BATCH frames and on
 * flush; RX buffers are given back without a kick unless the device may
 * have run dry (it then waits for a notification), with a watchdog kick
 * after NET_RX_IDLE_US of silence so a stalled device always resumes.
 */
#ifndef SQUIB_GUEST_VIRTIO_NET_H
#define SQUIB_GUEST_VIRTIO_NET_H

#include "virtio_drv.h"

#define VIRTIO_ID_NET           1
#define VIRTIO_NET_F_MAC        5
#define VIRTIO_NET_F_MRG_RXBUF  15

#define NET_HDR_LEN             12      /* virtio_net_hdr_v1 */
#define NET_QMAX                256     /* descriptors per queue at most */
#define NET_BUF_SIZE            2048    /* header + a 1514-byte frame fits */
#define NET_FRAME_MIN           60
#define NET_FRAME_MAX           1514
#define NET_TX_BATCH            32
#define NET_RX_IDLE_US          200
#define NET_REASM_SIZE          16384   /* a frame spread over MRG_RXBUF buffers */

#define ETH_ALEN                6
#define ETH_HLEN                14
#define ETHERTYPE_IPV4          0x0800
#define ETHERTYPE_ARP           0x0806
#define ETHERTYPE_TEST          0x88B5  /* IEEE local experimental: test frames */

/* Test-frame layout shared with the host tests (apps/squib-cli/tests/boot_net.rs):
 *   [0..6) dst  [6..12) src  [12..14) 0x88B5  [14] tag  [15..19) seq (big endian)
 *   [19..len) byte k = (uint8_t)(k * 7 + seq * 13 + tag) */
#define NET_TEST_HDR            19

struct net_queue {
	uint16_t size;
	uint16_t avail_idx;         /* next avail->idx we publish */
	uint16_t used_idx;          /* used->idx consumed up to */
	volatile struct virtq_desc *desc;
	volatile uint16_t *avail;   /* flags, idx, ring[size], used_event */
	volatile uint8_t *used;     /* flags, idx, ring[size] of {id, len}, avail_event */
	uint8_t *bufs;              /* size * NET_BUF_SIZE */
};

struct net_dev {
	uint64_t base;
	uint32_t irq;
	uint32_t index;             /* among the virtio-net devices (squibtest.net) */
	uint64_t offered, features;
	uint32_t rx_qmax, tx_qmax;  /* QueueNumMax */
	uint8_t mac[ETH_ALEN];
	bool has_mac, mrg;
	int broken;
	struct net_queue rx, tx;
	uint16_t tx_free[NET_QMAX];
	uint16_t tx_nfree;
	uint16_t tx_unkicked;
	uint16_t rx_reposted;       /* buffers given back since the last RX kick */
	uint64_t rx_idle_since;     /* TSC of the last poll that found a frame */
	/* The frame handed out by net_rx_poll, until net_rx_done. */
	uint16_t rx_held[NET_QMAX];
	uint16_t rx_nheld;
	/* counters */
	uint64_t rx_frames, rx_bytes, rx_merged, rx_bad;
	uint64_t tx_frames, tx_bytes;
	uint32_t rx_kicks, tx_kicks;
};

/* Finds the device (squibtest.net, default 0), negotiates, sets up both
 * queues, fills RX. Prints `TEST info virtio-net ...`, or `TEST fail <name> ...`
 * and returns nonzero. */
int net_open(struct net_dev *n, const char *name);
/* A free TX slot's frame area (NET_FRAME_MAX bytes after the header), or NULL
 * if every slot is still with the device. */
uint8_t *net_tx_buf(struct net_dev *n);
/* Publishes the slot net_tx_buf returned with `len` frame bytes. */
void net_tx_commit(struct net_dev *n, uint32_t len);
/* Copies and sends one frame, waiting for a free slot (bounded). 0 or -VIRTIO_E_*. */
int net_tx_send(struct net_dev *n, const void *frame, uint32_t len);
/* Notifies the TX queue if frames were published since the last kick. */
void net_tx_kick(struct net_dev *n);
/* Kicks and waits until the device has used every TX slot. */
int net_tx_flush(struct net_dev *n, uint64_t timeout_cycles);
/* Checks for one received frame (virtio header stripped). 1: *frame and *len are valid
 * until net_rx_done; 0: none yet; <0: -VIRTIO_E_*. */
int net_rx_poll(struct net_dev *n, uint8_t **frame, uint32_t *len);
/* Gives the buffers of the last frame back to the device. */
void net_rx_done(struct net_dev *n);
/* net_rx_poll until a frame arrives or timeout_cycles pass (0: timed out). */
int net_rx_wait(struct net_dev *n, uint8_t **frame, uint32_t *len, uint64_t timeout_cycles);
/* `TEST info <name> rx_frames=... status=...`; returns 1 on DEVICE_NEEDS_RESET. */
int net_report(struct net_dev *n, const char *name);

/* memcpy as one `rep movsb`: KVM's instruction emulator (kvm_pvm) runs it far
 * faster than a byte loop. */
void net_copy(void *dst, const void *src, size_t n);
/* Writes the same frame into every TX slot, so a bulk sender only has to patch
 * the sequence number (net_tx_buf + net_tx_commit). */
void net_tx_prefill(struct net_dev *n, const uint8_t *frame, uint32_t len);

/* Bulk paths for net-throughput, with as few guest instructions per frame as
 * possible (guest code is emulated on kvm_pvm). Both need an idle device (no
 * frame held, every TX slot back).
 *
 * net_tx_bulk: sends `count` copies of the frame already in every TX slot
 * (net_tx_prefill), `len` bytes each, and waits until all are used. 0 or -VIRTIO_E_*. */
int net_tx_bulk(struct net_dev *n, uint64_t count, uint32_t len, uint64_t timeout_cycles);
/* net_rx_bulk: counts received frames of exactly `len` bytes whose byte 14
 * (the test-frame tag) is `tag`, until `count` or timeout_cycles of silence;
 * other frames go to *ignored. *t_first / *t_last: TSC of the first and last
 * counted frame. Returns the count, or -VIRTIO_E_*. */
int64_t net_rx_bulk(struct net_dev *n, uint64_t count, uint32_t len, uint8_t tag,
		    uint64_t timeout_cycles, uint64_t *t_first, uint64_t *t_last,
		    uint64_t *ignored);

/* The TSC rate for reported rates: CPUID's, else squibtest.tsc_khz (the host
 * knows it where CPUID is silent, as under kvm_pvm), else 0 (no rates). */
uint64_t net_tsc_khz(const char **source);

/* Test frames (layout above). */
void net_fill_test_frame(uint8_t *f, uint32_t len, const uint8_t *dst, const uint8_t *src,
			 uint8_t tag, uint32_t seq);
/* `xx:xx:xx:xx:xx:xx` from the command line key; false if absent or malformed. */
bool net_cmdline_mac(const char *key, uint8_t out[ETH_ALEN]);
uint16_t net_be16(const uint8_t *p);
uint32_t net_be32(const uint8_t *p);
void net_put_be16(uint8_t *p, uint16_t v);
void net_put_be32(uint8_t *p, uint32_t v);

#endif
