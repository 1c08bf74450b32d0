/* SPDX-License-Identifier: Apache-2.0 */
/* hello: report what the VMM handed over. */
#include "../guest.h"

int scenario_hello(void)
{
	kprintf("TEST info boot=%s boot_info=%#lx valid=%u\n", boot_mode_name(g_boot.mode),
		boot_info_ptr, g_boot.valid ? 1 : 0);
	kprintf("TEST info cmdline_len=%u\n", g_boot.cmdline_len);
	kprintf("TEST info e820_entries=%u\n", g_boot.e820_count);
	/* Rounded to the nearest MiB: the e820 map omits the 0x9FC00-1 MiB hole. */
	kprintf("TEST info mem_mib=%lu\n", (g_boot.ram_bytes + (UINT64_C(1) << 19)) >> 20);

	struct virtio_mmio_dev devs[MAX_VIRTIO_MMIO];
	uint32_t n = virtio_mmio_discover(devs, MAX_VIRTIO_MMIO);
	kprintf("TEST info virtio_mmio_devices=%u\n", n);
	for (uint32_t i = 0; i < n; i++)
		kprintf("TEST info virtio_mmio base=%#lx size=%#lx irq=%u magic=%#x version=%u device_id=%u\n",
			devs[i].base, devs[i].size, devs[i].irq, devs[i].magic, devs[i].version,
			devs[i].device_id);

	if (!g_boot.valid) {
		kprintf("TEST fail hello boot-info-invalid\n");
		return 1;
	}
	kprintf("TEST ok hello\n");
	return 0;
}
