/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rng: read 4 KiB from the first virtio-rng device (device-writable buffers;
 * the device may fill less than offered per request, so it is asked again for
 * the rest) and check that they look random:
 *   TEST ok rng bytes=4096 distinct=<distinct byte values> nonzero=<0|1>
 *   TEST fail rng ...        (fewer than 200 distinct values, or a transport error)
 */
#include "../virtio_drv.h"

#define RNG_BYTES       4096
#define MIN_DISTINCT    200
#define MAX_REQUESTS    1024

int scenario_rng(void)
{
	struct virtio_mmio_dev m;
	struct virtio_dev d;
	if (virtio_find(VIRTIO_ID_RNG, 0, &m)) {
		kprintf("TEST fail rng no-virtio-rng\n");
		return 1;
	}
	int err = virtio_init(&d, &m, 0);
	if (err) {
		kprintf("TEST fail rng init %s base=%#lx status=%#x\n", virtio_strerror(err), m.base,
			virtio_status(&d));
		return 1;
	}
	kprintf("TEST info virtio-rng base=%#lx irq=%u features=%#lx queue_size=%u\n", d.base, d.irq,
		d.features, d.vq.size);

	uint8_t *buf = virtio_io_buf;
	memset(buf, 0, RNG_BYTES);
	uint32_t got = 0, requests = 0;
	while (got < RNG_BYTES && requests < MAX_REQUESTS) {
		struct virtq_seg seg = { (uintptr_t)buf + got, RNG_BYTES - got, true };
		uint32_t len = 0;
		err = virtq_submit_wait(&d, &seg, 1, &len, virtio_io_timeout());
		if (err) {
			kprintf("TEST fail rng read %s bytes=%u\n", virtio_strerror(err), got);
			return 1;
		}
		got += len < RNG_BYTES - got ? len : RNG_BYTES - got;
		requests++;
	}

	bool seen[256] = { false };
	uint32_t distinct = 0, nonzero = 0;
	for (uint32_t i = 0; i < got; i++) {
		if (!seen[buf[i]]) {
			seen[buf[i]] = true;
			distinct++;
		}
		nonzero |= buf[i] != 0;
	}
	if (virtio_report("rng", &d))
		return 1;
	if (got < RNG_BYTES || distinct < MIN_DISTINCT) {
		kprintf("TEST fail rng bytes=%u distinct=%u nonzero=%u\n", got, distinct, nonzero);
		return 1;
	}
	kprintf("TEST ok rng bytes=%u distinct=%u nonzero=%u\n", got, distinct, nonzero);
	return 0;
}
