/* SPDX-License-Identifier: Apache-2.0 */
/*
 * blk-write: write a pattern to sectors [start, start + n) (squibtest.start,
 * default 8; squibtest.sectors, default 8), FLUSH if the device offers it,
 * read the range back and compare. Byte i of sector s is (s * 31 + i) & 0xff,
 * so the host can check the backing file afterwards.
 *   TEST ok blk-write sectors=<n> start=<s>
 */
#include "../virtio_drv.h"

#define START_DEFAULT   8
#define SECTORS_DEFAULT 8

static uint8_t pattern(uint64_t sector, uint32_t i)
{
	return (uint8_t)(sector * 31 + i);
}

static void fill(uint8_t *buf, uint64_t sector, uint32_t count)
{
	for (uint32_t k = 0; k < count; k++)
		for (uint32_t i = 0; i < SECTOR_SIZE; i++)
			buf[k * SECTOR_SIZE + i] = pattern(sector + k, i);
}

int scenario_blk_write(void)
{
	static const char name[] = "blk-write";
	struct blk_dev b;
	if (blk_open(&b, name))
		return 1;
	uint64_t start = cmdline_get_u64(g_boot.cmdline, "squibtest.start", START_DEFAULT);
	uint64_t n = cmdline_get_u64(g_boot.cmdline, "squibtest.sectors", SECTORS_DEFAULT);
	if (start > b.capacity || n > b.capacity - start) {
		kprintf("TEST fail blk-write range start=%lu sectors=%lu capacity=%lu\n", start, n,
			b.capacity);
		return 1;
	}
	uint32_t chunk = b.max_request / SECTOR_SIZE;

	for (uint64_t s = start; s < start + n; s += chunk) {
		uint32_t k = start + n - s < chunk ? (uint32_t)(start + n - s) : chunk;
		fill(virtio_io_buf, s, k);
		int st = blk_request(&b, VIRTIO_BLK_T_OUT, s, virtio_io_buf, k * SECTOR_SIZE);
		if (blk_check(name, "write", s, st))
			return 1;
	}
	bool flush = b.v.features & FEATURE(VIRTIO_BLK_F_FLUSH);
	if (flush && blk_check(name, "flush", 0, blk_request(&b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0)))
		return 1;
	kprintf("TEST info blk-write flushed=%u\n", flush ? 1 : 0);

	for (uint64_t s = start; s < start + n; s += chunk) {
		uint32_t k = start + n - s < chunk ? (uint32_t)(start + n - s) : chunk;
		memset(virtio_io_buf, 0, (size_t)k * SECTOR_SIZE);
		int st = blk_request(&b, VIRTIO_BLK_T_IN, s, virtio_io_buf, k * SECTOR_SIZE);
		if (blk_check(name, "read-back", s, st))
			return 1;
		for (uint32_t j = 0; j < k; j++)
			for (uint32_t i = 0; i < SECTOR_SIZE; i++) {
				uint8_t got = virtio_io_buf[j * SECTOR_SIZE + i];
				if (got != pattern(s + j, i)) {
					kprintf("TEST fail blk-write mismatch sector=%lu byte=%u got=%#x want=%#x\n",
						s + j, i, got, pattern(s + j, i));
					return 1;
				}
			}
	}
	if (virtio_report(name, &b.v))
		return 1;
	kprintf("TEST ok blk-write sectors=%lu start=%lu\n", n, start);
	return 0;
}
