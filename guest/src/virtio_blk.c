/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-blk on top of virtio_drv.c: device selection, capacity, and one
 * synchronous request at a time.
 *
 * A request is the chain  header (16 bytes, device reads) -> data -> status
 * (1 byte, device writes); FLUSH has no data part. The data part is one
 * descriptor unless the device offers VIRTIO_BLK_F_SEG_MAX: Firecracker does
 * not offer it and accepts exactly one data descriptor. VIRTIO_BLK_F_SIZE_MAX
 * caps each data descriptor. `squibtest.seg_bytes=<n>` splits the data into
 * smaller descriptors (only as far as SEG_MAX allows), to exercise longer chains.
 */
#include "virtio_drv.h"

/* struct virtio_blk_config offsets. */
#define BLK_CFG_CAPACITY        0x00    /* le64 */
#define BLK_CFG_SIZE_MAX        0x08    /* le32, VIRTIO_BLK_F_SIZE_MAX */
#define BLK_CFG_SEG_MAX         0x0C    /* le32, VIRTIO_BLK_F_SEG_MAX */

#define BLK_WANTED (FEATURE(VIRTIO_BLK_F_SIZE_MAX) | FEATURE(VIRTIO_BLK_F_SEG_MAX) | \
		    FEATURE(VIRTIO_BLK_F_RO) | FEATURE(VIRTIO_BLK_F_FLUSH))

#define SCRATCH_HDR             0
#define SCRATCH_STATUS          64

struct blk_req_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

uint64_t blk_read_capacity(const struct blk_dev *b)
{
	return virtio_config_read64(&b->v, BLK_CFG_CAPACITY);
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

int blk_open(struct blk_dev *b, const char *name)
{
	memset(b, 0, sizeof(*b));
	b->index = (uint32_t)cmdline_get_u64(g_boot.cmdline, "squibtest.blk", 0);
	struct virtio_mmio_dev m;
	int err = virtio_find(VIRTIO_ID_BLOCK, b->index, &m);
	if (err) {
		kprintf("TEST fail %s no-virtio-blk index=%u\n", name, b->index);
		return 1;
	}
	err = virtio_init(&b->v, &m, BLK_WANTED);
	if (err) {
		kprintf("TEST fail %s init %s base=%#lx status=%#x\n", name, virtio_strerror(err),
			m.base, virtio_status(&b->v));
		return 1;
	}
	if (b->v.vq.size < 3) {
		kprintf("TEST fail %s queue-too-small size=%u\n", name, b->v.vq.size);
		return 1;
	}
	b->capacity = blk_read_capacity(b);

	/* Data descriptors per request, and bytes per descriptor. */
	b->max_segs = 1;
	if (b->v.features & FEATURE(VIRTIO_BLK_F_SEG_MAX)) {
		uint32_t seg_max = virtio_config_read32(&b->v, BLK_CFG_SEG_MAX);
		if (seg_max > 1)
			b->max_segs = seg_max;
	}
	b->max_segs = min_u32(b->max_segs, b->v.vq.size - 2u);
	b->seg_bytes = VIRTIO_IO_BUF_SIZE;
	if (b->v.features & FEATURE(VIRTIO_BLK_F_SIZE_MAX)) {
		uint32_t size_max = virtio_config_read32(&b->v, BLK_CFG_SIZE_MAX);
		if (size_max >= SECTOR_SIZE)
			b->seg_bytes = min_u32(b->seg_bytes, size_max & ~(SECTOR_SIZE - 1u));
	}
	uint64_t want_seg = cmdline_get_u64(g_boot.cmdline, "squibtest.seg_bytes", 0);
	if (want_seg >= SECTOR_SIZE && want_seg < b->seg_bytes)
		b->seg_bytes = (uint32_t)want_seg & ~(SECTOR_SIZE - 1u);
	uint64_t max_req = (uint64_t)b->max_segs * b->seg_bytes;
	b->max_request = (uint32_t)(max_req < VIRTIO_IO_BUF_SIZE ? max_req : VIRTIO_IO_BUF_SIZE);

	kprintf("TEST info virtio-blk index=%u base=%#lx irq=%u features=%#lx offered=%#lx "
		"queue_num_max=%u queue_size=%u capacity=%lu max_request=%u segs=%u\n",
		b->index, b->v.base, b->v.irq, b->v.features, b->v.offered, b->v.queue_num_max,
		b->v.vq.size, b->capacity, b->max_request,
		(b->max_request + b->seg_bytes - 1) / b->seg_bytes);
	return 0;
}

int blk_request(struct blk_dev *b, uint32_t type, uint64_t sector, void *buf, uint32_t len)
{
	struct virtq_seg segs[VIRTQ_MAX_SIZE];
	uint32_t n = 0;
	uint8_t *scratch = b->v.vq.scratch;
	volatile struct blk_req_hdr *hdr = (volatile struct blk_req_hdr *)(scratch + SCRATCH_HDR);
	volatile uint8_t *status = scratch + SCRATCH_STATUS;

	if (len > b->max_request || len % SECTOR_SIZE)
		return -VIRTIO_E_CHAIN;
	hdr->type = type;
	hdr->reserved = 0;
	hdr->sector = sector;
	*status = VIRTIO_BLK_S_NONE;

	segs[n++] = (struct virtq_seg){ (uintptr_t)hdr, sizeof(*hdr), false };
	for (uint32_t off = 0; off < len; off += b->seg_bytes)
		segs[n++] = (struct virtq_seg){ (uintptr_t)buf + off, min_u32(b->seg_bytes, len - off),
						type == VIRTIO_BLK_T_IN };
	segs[n++] = (struct virtq_seg){ (uintptr_t)status, 1, true };

	int err = virtq_submit_wait(&b->v, segs, n, NULL, virtio_io_timeout());
	return err ? err : *status;
}

int blk_check(const char *name, const char *what, uint64_t sector, int st)
{
	if (st == VIRTIO_BLK_S_OK)
		return 0;
	if (st < 0)
		kprintf("TEST fail %s %s sector=%lu %s\n", name, what, sector, virtio_strerror(st));
	else
		kprintf("TEST fail %s %s sector=%lu status=%d\n", name, what, sector, st);
	return 1;
}
