/* SPDX-License-Identifier: Apache-2.0 */
/*
 * blk-ro: on a read-only drive, a write must fail with VIRTIO_BLK_S_IOERR.
 * The guest reads sector 0 and writes the same bytes back, so a device that
 * wrongly accepts the write does not change the disk.
 *   TEST ok blk-ro status=1 ro_offered=<0|1>
 *   TEST fail blk-ro status=<s> ro_offered=<0|1>      (s = 0 if the write succeeded)
 */
#include "../virtio_drv.h"

int scenario_blk_ro(void)
{
	static const char name[] = "blk-ro";
	struct blk_dev b;
	if (blk_open(&b, name))
		return 1;
	unsigned ro = b.v.offered & FEATURE(VIRTIO_BLK_F_RO) ? 1 : 0;
	if (b.capacity == 0) {
		kprintf("TEST fail blk-ro empty-disk ro_offered=%u\n", ro);
		return 1;
	}
	if (blk_check(name, "read", 0, blk_request(&b, VIRTIO_BLK_T_IN, 0, virtio_io_buf, SECTOR_SIZE)))
		return 1;
	int st = blk_request(&b, VIRTIO_BLK_T_OUT, 0, virtio_io_buf, SECTOR_SIZE);
	if (virtio_report(name, &b.v))
		return 1;
	if (st < 0) {
		kprintf("TEST fail blk-ro write %s ro_offered=%u\n", virtio_strerror(st), ro);
		return 1;
	}
	if (st != VIRTIO_BLK_S_IOERR) {
		kprintf("TEST fail blk-ro status=%d ro_offered=%u\n", st, ro);
		return 1;
	}
	kprintf("TEST ok blk-ro status=%d ro_offered=%u\n", st, ro);
	return 0;
}
