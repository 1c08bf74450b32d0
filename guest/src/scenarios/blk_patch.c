/* SPDX-License-Identifier: Apache-2.0 */
/*
 * blk-patch: wait for the host to change the disk under the running guest
 * (Firecracker: PATCH /drives/{id} with a new path; QEMU: block_resize), which
 * updates the capacity in config space and raises a configuration-change
 * notification (InterruptStatus bit 1, ConfigGeneration may advance).
 *
 *   TEST info blk-patch capacity=<old>        -> the host may change the disk now
 *   TEST info blk-patch config_irq=<0|1> generation=<g0>-><g1>
 *   TEST info blk-patch read sector=<b-1> sum=<FNV-1a of that sector>
 *   TEST ok blk-patch old=<a> new=<b>
 *   TEST fail blk-patch timeout capacity=<a> ...   (after squibtest.timeout_ms, default 30 s)
 *
 * Config space is re-read every squibtest.poll_ms (default 5 ms) of TSC time,
 * so the guest does not flood the VMM with MMIO exits.
 */
#include "../virtio_drv.h"

#define TIMEOUT_MS_DEFAULT 30000
#define POLL_MS_DEFAULT    5

int scenario_blk_patch(void)
{
	static const char name[] = "blk-patch";
	struct blk_dev b;
	if (blk_open(&b, name))
		return 1;
	uint64_t timeout_ms = cmdline_get_u64(g_boot.cmdline, "squibtest.timeout_ms", TIMEOUT_MS_DEFAULT);
	uint64_t poll_ms = cmdline_get_u64(g_boot.cmdline, "squibtest.poll_ms", POLL_MS_DEFAULT);
	uint32_t gen0 = virtio_config_generation(&b.v);
	uint64_t old = blk_read_capacity(&b), cap = old;
	virtio_ack_interrupts(&b.v);
	b.v.isr_seen = 0;
	kprintf("TEST info blk-patch capacity=%lu\n", old);

	uint64_t start = rdtsc(), budget = timeout_ms * tsc_khz();
	while (cap == old || cap == 0) {
		if (rdtsc() - start > budget) {
			kprintf("TEST fail blk-patch timeout capacity=%lu config_irq=%u generation=%u->%u\n",
				old, b.v.isr_seen & VIRTIO_INT_CONFIG ? 1 : 0, gen0,
				virtio_config_generation(&b.v));
			return 1;
		}
		udelay(poll_ms * 1000);
		virtio_ack_interrupts(&b.v);
		cap = blk_read_capacity(&b);
	}
	/* The notification may trail the config update by a little: look once more. */
	udelay(poll_ms * 1000);
	virtio_ack_interrupts(&b.v);
	kprintf("TEST info blk-patch config_irq=%u generation=%u->%u\n",
		b.v.isr_seen & VIRTIO_INT_CONFIG ? 1 : 0, gen0, virtio_config_generation(&b.v));
	/* The device must serve the new size: read its last sector. */
	int st = blk_request(&b, VIRTIO_BLK_T_IN, cap - 1, virtio_io_buf, SECTOR_SIZE);
	if (blk_check(name, "read-last", cap - 1, st))
		return 1;
	kprintf("TEST info blk-patch read sector=%lu sum=%016lx\n", cap - 1,
		fnv1a64(FNV1A64_INIT, virtio_io_buf, SECTOR_SIZE));
	if (virtio_report(name, &b.v))
		return 1;
	kprintf("TEST ok blk-patch old=%lu new=%lu\n", old, cap);
	return 0;
}
