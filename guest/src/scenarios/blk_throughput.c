/* SPDX-License-Identifier: Apache-2.0 */
/*
 * blk-throughput: two timed phases on the virtio-blk device, one request in
 * flight at a time:
 *   seq   read squibtest.mib MiB (default 8; clamped to the capacity) from
 *         sector 0 in requests of max_request bytes (64 KiB unless the device
 *         limits it);
 *   rand  squibtest.iops_ops (default 2048) 4 KiB reads at 4 KiB-aligned
 *         positions from a fixed LCG over the whole disk.
 * Each phase is bracketed by `BLK-T0 <phase>` / `BLK-T1 <phase>` lines so the
 * host can time it with its own clock. The guest times it with the TSC; rates
 * are given only if the CPU or hypervisor announces the TSC frequency:
 *   TEST info blk-throughput phase=seq bytes=<n> requests=<r> tsc_cycles=<c>
 *   TEST info blk-throughput phase=rand ops=<m> bytes=<m*4096> tsc_cycles=<c>
 *   TEST ok blk-throughput bytes=<n> tsc_cycles=<c> tsc_khz=<k|0> mib_s=<x.xx|0> iops=<y|0>
 *           ops=<m> ops_tsc_cycles=<c>
 */
#include "../virtio_drv.h"

#define MIB_DEFAULT     8
#define OPS_DEFAULT     2048
#define RAND_BYTES      4096
#define RAND_SECTORS    (RAND_BYTES / SECTOR_SIZE)

int scenario_blk_throughput(void)
{
	static const char name[] = "blk-throughput";
	struct blk_dev b;
	if (blk_open(&b, name))
		return 1;
	uint64_t bytes = cmdline_get_u64(g_boot.cmdline, "squibtest.mib", MIB_DEFAULT) << 20;
	uint64_t ops = cmdline_get_u64(g_boot.cmdline, "squibtest.iops_ops", OPS_DEFAULT);
	if (bytes > b.capacity * SECTOR_SIZE) {
		kprintf("TEST info blk-throughput bytes=%lu clamped-to capacity=%lu\n", bytes, b.capacity);
		bytes = b.capacity * SECTOR_SIZE;
	}
	uint64_t blocks = b.capacity / RAND_SECTORS;
	if (ops && (!blocks || b.max_request < RAND_BYTES)) {
		kprintf("TEST fail blk-throughput no-room-for-4k-reads capacity=%lu max_request=%u\n",
			b.capacity, b.max_request);
		return 1;
	}
	const char *src;
	uint64_t khz = tsc_khz_cpuid(&src);
	kprintf("TEST info tsc_khz=%lu source=%s\n", khz, src);

	kprintf("BLK-T0 seq\n");
	uint64_t t0 = rdtsc(), requests = 0;
	for (uint64_t off = 0; off < bytes; requests++) {
		uint32_t len = bytes - off < b.max_request ? (uint32_t)(bytes - off) : b.max_request;
		len &= ~(SECTOR_SIZE - 1u);
		int st = blk_request(&b, VIRTIO_BLK_T_IN, off / SECTOR_SIZE, virtio_io_buf, len);
		if (blk_check(name, "seq-read", off / SECTOR_SIZE, st))
			return 1;
		off += len;
		if (!len)
			break;
	}
	uint64_t seq_cycles = rdtsc() - t0;
	kprintf("BLK-T1 seq\n");
	kprintf("TEST info blk-throughput phase=seq bytes=%lu requests=%lu tsc_cycles=%lu\n", bytes,
		requests, seq_cycles);

	kprintf("BLK-T0 rand\n");
	uint64_t x = 0x5eed, t1 = rdtsc();
	for (uint64_t i = 0; i < ops; i++) {
		x = x * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
		uint64_t sector = ((x >> 16) % blocks) * RAND_SECTORS;
		int st = blk_request(&b, VIRTIO_BLK_T_IN, sector, virtio_io_buf, RAND_BYTES);
		if (blk_check(name, "rand-read", sector, st))
			return 1;
	}
	uint64_t rand_cycles = rdtsc() - t1;
	kprintf("BLK-T1 rand\n");
	kprintf("TEST info blk-throughput phase=rand ops=%lu bytes=%lu tsc_cycles=%lu\n", ops,
		ops * RAND_BYTES, rand_cycles);

	/* Rates from microseconds: cycles * 1000 / kHz. */
	uint64_t mib_s_x100 = 0, iops = 0;
	if (khz) {
		uint64_t seq_us = seq_cycles * 1000 / khz, rand_us = rand_cycles * 1000 / khz;
		if (seq_us)
			mib_s_x100 = bytes * 100 * 1000000 / seq_us >> 20;
		if (rand_us)
			iops = ops * 1000000 / rand_us;
	}
	if (virtio_report(name, &b.v))
		return 1;
	kprintf("TEST ok blk-throughput bytes=%lu tsc_cycles=%lu tsc_khz=%lu ", bytes, seq_cycles, khz);
	if (mib_s_x100)
		kprintf("mib_s=%lu.%02lu", mib_s_x100 / 100, mib_s_x100 % 100);
	else
		kprintf("mib_s=0");
	kprintf(" iops=%lu ops=%lu ops_tsc_cycles=%lu\n", iops, ops, rand_cycles);
	return 0;
}
