/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-mmio discovery from the command line, the way Firecracker announces
 * devices to non-ACPI kernels: virtio_mmio.device=<size>@<base>:<irq>[:<id>]
 * (e.g. virtio_mmio.device=4K@0xc0001000:5). Each slot's header registers are
 * read so device scenarios can find their device by ID.
 */
#include "guest.h"

#define VIRTIO_MMIO_MAGIC_VALUE 0x000
#define VIRTIO_MMIO_VERSION     0x004
#define VIRTIO_MMIO_DEVICE_ID   0x008
#define VIRTIO_MMIO_VENDOR_ID   0x00C
#define VIRTIO_MAGIC            0x74726976  /* "virt" */

static uint64_t parse_size(const char *s, const char **end)
{
	uint64_t v = strtou64(s, &s, 0);
	switch (*s) {
	case 'k': case 'K': v <<= 10; s++; break;
	case 'm': case 'M': v <<= 20; s++; break;
	case 'g': case 'G': v <<= 30; s++; break;
	}
	*end = s;
	return v;
}

uint32_t virtio_mmio_discover(struct virtio_mmio_dev *out, uint32_t max)
{
	uint32_t n = 0;
	size_t pos = 0, len;
	const char *v;
	while (n < max && (v = cmdline_next(g_boot.cmdline, "virtio_mmio.device", &pos, &len))) {
		const char *s = v;
		struct virtio_mmio_dev d = {0};
		d.size = parse_size(s, &s);
		if (*s++ != '@')
			continue;
		d.base = strtou64(s, &s, 0);
		if (*s++ != ':')
			continue;
		d.irq = (uint32_t)strtou64(s, &s, 0);
		/* Only probe what our page tables map, and only the MMIO gap. */
		if (d.base >= MMIO_GAP_START && d.base + 0x100 <= (1ULL << 32)) {
			d.magic = mmio_read32(d.base + VIRTIO_MMIO_MAGIC_VALUE);
			if (d.magic == VIRTIO_MAGIC) {
				d.version = mmio_read32(d.base + VIRTIO_MMIO_VERSION);
				d.device_id = mmio_read32(d.base + VIRTIO_MMIO_DEVICE_ID);
				d.vendor_id = mmio_read32(d.base + VIRTIO_MMIO_VENDOR_ID);
			}
		}
		out[n++] = d;
	}
	return n;
}
