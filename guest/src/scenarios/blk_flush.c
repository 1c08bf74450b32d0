/* SPDX-License-Identifier: Apache-2.0 */
/*
 * blk-flush: one VIRTIO_BLK_T_FLUSH request (header + status, no data), sent
 * whether or not the device offers VIRTIO_BLK_F_FLUSH.
 *   TEST ok blk-flush status=0 flush_offered=<0|1>
 *   TEST fail blk-flush status=<s> flush_offered=<0|1>
 */
#include "../virtio_drv.h"

int scenario_blk_flush(void)
{
	static const char name[] = "blk-flush";
	struct blk_dev b;
	if (blk_open(&b, name))
		return 1;
	unsigned offered = b.v.offered & FEATURE(VIRTIO_BLK_F_FLUSH) ? 1 : 0;
	int st = blk_request(&b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0);
	if (virtio_report(name, &b.v))
		return 1;
	if (st < 0) {
		kprintf("TEST fail blk-flush %s flush_offered=%u\n", virtio_strerror(st), offered);
		return 1;
	}
	kprintf("TEST %s blk-flush status=%d flush_offered=%u\n", st == VIRTIO_BLK_S_OK ? "ok" : "fail",
		st, offered);
	return st == VIRTIO_BLK_S_OK ? 0 : 1;
}
