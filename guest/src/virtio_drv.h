/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Minimal virtio 1.x (modern) virtio-mmio driver: up to VIRTIO_MAX_QUEUES split
 * virtqueues per device, one request in flight per queue, completion by
 * polling the used ring.
 * Interrupts stay disabled in this guest; InterruptStatus is acknowledged
 * after each completion so the device's interrupt line ends up clean.
 */
#ifndef SQUIB_GUEST_VIRTIO_DRV_H
#define SQUIB_GUEST_VIRTIO_DRV_H

#include "guest.h"

/* Device IDs (virtio 1.x §5). */
#define VIRTIO_ID_BLOCK         2
#define VIRTIO_ID_RNG           4
#define VIRTIO_ID_BALLOON       5
#define VIRTIO_ID_PMEM          27
#define VIRTIO_ID_MEM           24

/* Feature bits. */
#define VIRTIO_F_VERSION_1      32
#define VIRTIO_BLK_F_SIZE_MAX   1
#define VIRTIO_BLK_F_SEG_MAX    2
#define VIRTIO_BLK_F_RO         5
#define VIRTIO_BLK_F_FLUSH      9
#define FEATURE(bit)            (UINT64_C(1) << (bit))

/* Device status bits. */
#define VIRTIO_STATUS_ACKNOWLEDGE        0x01
#define VIRTIO_STATUS_DRIVER             0x02
#define VIRTIO_STATUS_DRIVER_OK          0x04
#define VIRTIO_STATUS_FEATURES_OK        0x08
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED             0x80

/* InterruptStatus bits. */
#define VIRTIO_INT_USED_RING    0x1
#define VIRTIO_INT_CONFIG       0x2

#define VIRTQ_MAX_SIZE          16      /* queue size = min(QueueNumMax, 16), power of two */
#define VIRTIO_MAX_QUEUES       5       /* queues one device can have set up */

/* Errors (negative return values); virtio_strerror() names them. */
enum {
	VIRTIO_OK = 0,
	VIRTIO_E_NODEV = 1,         /* no such device on the command line */
	VIRTIO_E_MAGIC,             /* no "virt" magic at the base address */
	VIRTIO_E_LEGACY,            /* Version 1 (legacy) transport: not supported */
	VIRTIO_E_NO_VERSION_1,      /* device does not offer VIRTIO_F_VERSION_1 */
	VIRTIO_E_FEATURES,          /* FEATURES_OK did not stick */
	VIRTIO_E_NO_QUEUE,          /* QueueNumMax is 0 */
	VIRTIO_E_QUEUE,             /* queue already ready, or QueueReady did not stick */
	VIRTIO_E_CHAIN,             /* descriptor chain longer than the queue */
	VIRTIO_E_TIMEOUT,           /* no completion within the TSC budget */
	VIRTIO_E_NEEDS_RESET,       /* device set DEVICE_NEEDS_RESET */
	VIRTIO_E_USED,              /* used ring returned an unexpected descriptor id */
	VIRTIO_E_RESET,             /* device status did not read back 0 after reset */
	VIRTIO_E_NO_QUEUE_MEM,      /* static virtqueue pool exhausted */
	VIRTIO_E_BROKEN,            /* an earlier request failed at the transport level */
};

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
#define VIRTQ_DESC_F_NEXT       1
#define VIRTQ_DESC_F_WRITE      2   /* device writes this buffer */

struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[VIRTQ_MAX_SIZE];
	uint16_t used_event;
};

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[VIRTQ_MAX_SIZE];
	uint16_t avail_event;
};

struct virtq {
	uint16_t size;
	uint16_t avail_idx;         /* next avail->idx value we publish */
	uint16_t used_idx;          /* used->idx value we have consumed up to */
	volatile struct virtq_desc *desc;
	volatile struct virtq_avail *avail;
	volatile struct virtq_used *used;
	uint8_t *scratch;           /* 1 KiB of per-queue DMA memory (request headers, status) */
};

struct virtio_dev {
	uint64_t base;
	uint32_t irq;
	uint32_t device_id;
	uint64_t offered;           /* device features */
	uint64_t features;          /* negotiated */
	uint32_t queue_num_max;
	uint32_t isr_seen;          /* OR of every InterruptStatus value acknowledged */
	uint32_t requests;          /* completed chains */
	uint32_t irq_missing;       /* completions without InterruptStatus bit 0 within 1 ms */
	int broken;                 /* a request timed out or the device needs a reset: the
				       queue's descriptors may still be in use, stop submitting */
	struct virtq vq;            /* queue 0 */
	uint32_t num_queues;        /* queues set up (vq, then xq[0..]) */
	struct virtq xq[VIRTIO_MAX_QUEUES - 1];
};

/* One buffer of a descriptor chain. */
struct virtq_seg {
	uint64_t addr;
	uint32_t len;
	bool device_writes;
};

/* A shared, page-aligned, never-zeroed DMA buffer for the scenarios. */
#define VIRTIO_IO_BUF_SIZE (64 * 1024)
extern uint8_t virtio_io_buf[VIRTIO_IO_BUF_SIZE];

/* Find the index-th (0-based) announced device with this device ID. */
int virtio_find(uint32_t device_id, uint32_t index, struct virtio_mmio_dev *out);
/* Reset, negotiate (VERSION_1 | (wanted & offered)), set up queue 0, DRIVER_OK. */
int virtio_init(struct virtio_dev *d, const struct virtio_mmio_dev *m, uint64_t wanted);
/* virtio_init with queues 0..nqueues-1 (at most VIRTIO_MAX_QUEUES) set up; nqueues 0 sets
 * up every queue the device has (QueueNumMax != 0), up to VIRTIO_MAX_QUEUES. */
int virtio_init_queues(struct virtio_dev *d, const struct virtio_mmio_dev *m, uint64_t wanted,
		       uint32_t nqueues);
/* Put a chain on queue 0, notify, and poll for its completion. *used_len may be NULL. */
int virtq_submit_wait(struct virtio_dev *d, const struct virtq_seg *segs, uint32_t n,
		      uint32_t *used_len, uint64_t timeout_cycles);
/* The same on queue qi. */
int virtq_submit_wait_q(struct virtio_dev *d, uint32_t qi, const struct virtq_seg *segs,
			uint32_t n, uint32_t *used_len, uint64_t timeout_cycles);
/* Put a chain on queue qi and notify, without waiting (one chain in flight per queue). */
int virtq_add(struct virtio_dev *d, uint32_t qi, const struct virtq_seg *segs, uint32_t n);
/* 1 if queue qi returned its chain (*used_len set, may be NULL), 0 if not yet, <0 on error. */
int virtq_poll(struct virtio_dev *d, uint32_t qi, uint32_t *used_len);
/* A 32-bit config-space write. */
void virtio_config_write32(const struct virtio_dev *d, uint32_t offset, uint32_t v);
/* Acknowledge whatever InterruptStatus holds; returns it. */
uint32_t virtio_ack_interrupts(struct virtio_dev *d);
uint32_t virtio_status(const struct virtio_dev *d);
uint32_t virtio_config_generation(const struct virtio_dev *d);
uint32_t virtio_config_read32(const struct virtio_dev *d, uint32_t offset);
/* A 64-bit config field as two 32-bit reads, retried until ConfigGeneration is stable. */
uint64_t virtio_config_read64(const struct virtio_dev *d, uint32_t offset);
const char *virtio_strerror(int err);
/* End-of-scenario check: prints `TEST info <name> requests=<n> used_irq_missing=<m>
 * status=<hex>`, and `TEST fail <name> device-needs-reset` (returning 1) if the device
 * set DEVICE_NEEDS_RESET. */
int virtio_report(const char *name, const struct virtio_dev *d);
/* Request timeout from squibtest.io_timeout_ms (default 10 s), in TSC cycles. */
uint64_t virtio_io_timeout(void);

/* ---- virtio-blk (virtio_blk.c) ---- */
#define SECTOR_SIZE             512
#define VIRTIO_BLK_T_IN         0
#define VIRTIO_BLK_T_OUT        1
#define VIRTIO_BLK_T_FLUSH      4
#define VIRTIO_BLK_S_OK         0
#define VIRTIO_BLK_S_IOERR      1
#define VIRTIO_BLK_S_UNSUPP     2
#define VIRTIO_BLK_S_NONE       0xFF    /* status byte untouched by the device */

struct blk_dev {
	struct virtio_dev v;
	uint32_t index;             /* among the virtio-blk devices (squibtest.blk) */
	uint64_t capacity;          /* 512-byte sectors */
	uint32_t max_segs;          /* data descriptors per request */
	uint32_t seg_bytes;         /* bytes per data descriptor */
	uint32_t max_request;       /* bytes per request (<= VIRTIO_IO_BUF_SIZE) */
};

/* Find and initialise the virtio-blk device chosen by squibtest.blk (default 0).
 * On failure prints `TEST fail <name> <why>` and returns nonzero. */
int blk_open(struct blk_dev *b, const char *name);
/* One request. Returns the device status byte (VIRTIO_BLK_S_*), or -VIRTIO_E_* on a
 * transport error. len must be a multiple of 512 and at most b->max_request. */
int blk_request(struct blk_dev *b, uint32_t type, uint64_t sector, void *buf, uint32_t len);
uint64_t blk_read_capacity(const struct blk_dev *b);
/* Prints `TEST fail <name> ...` for a non-OK result; returns 0 if status was OK. */
int blk_check(const char *name, const char *what, uint64_t sector, int st);

uint64_t fnv1a64(uint64_t h, const void *buf, size_t n);
#define FNV1A64_INIT UINT64_C(0xcbf29ce484222325)

#endif
