/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mem: drive the first virtio-mem device (memory hotplug) like Linux's driver
 * does in spirit, with polling: follow `requested_size` until it is 0 again
 * after having been non-zero.
 *
 *  - Accepts VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE, reads the region from the
 *    configuration space and identity-maps it (2 MiB pages).
 *  - Plugged memory is a prefix of the region. When requested > plugged, PLUG
 *    requests of up to squibtest.mem_chunk blocks (default: as many as one
 *    request can carry), then one word per 4 KiB page of the new memory is
 *    written and read back:
 *      TEST info mem plugged mib=<m> us=<t> requests=<n>
 *      TEST info mem checked mib=<m> pages=<p> ok=<q>
 *  - When requested < plugged: first every plugged page is verified, then
 *    UNPLUG requests from the top; the first word of the region is then read
 *    (0xffffffffffffffff when the host removed the memory from the guest):
 *      TEST info mem verify pages=<p> ok=<q>
 *      TEST info mem unplugged mib=<m> us=<t> unplugged_read=<hex>
 *  - Finally: TEST ok mem max_mib=<m> requests=<n>
 *
 * `TEST info mem ready ...` tells the host it may change the requested size.
 * squibtest.timeout_ms (default 120000) bounds the whole run.
 */
#include "../virtio_drv.h"

#define F_UNPLUGGED_INACCESSIBLE 1
#define CFG_BLOCK_SIZE   0
#define CFG_ADDR         16
#define CFG_REGION_SIZE  24
#define CFG_USABLE       32
#define CFG_PLUGGED      40
#define CFG_REQUESTED    48
#define REQ_PLUG         0
#define REQ_UNPLUG       1
#define RESP_ACK         0
#define PAGE             4096u
#define MAGIC            UINT64_C(0x6d656d2d68706c67)  /* "mem-hplg" */

static uint64_t word_for(uint64_t page_addr)
{
	return page_addr ^ MAGIC;
}

/* One PLUG/UNPLUG request; returns the response type, or <0 on a transport error. */
static int mem_request(struct virtio_dev *d, uint16_t type, uint64_t addr, uint16_t nb)
{
	uint8_t *req = d->vq.scratch;
	uint8_t *resp = d->vq.scratch + 64;
	memset(req, 0, 24);
	req[0] = (uint8_t)type;
	req[1] = (uint8_t)(type >> 8);
	for (int i = 0; i < 8; i++)
		req[8 + i] = (uint8_t)(addr >> (8 * i));
	req[16] = (uint8_t)nb;
	req[17] = (uint8_t)(nb >> 8);
	memset(resp, 0xff, 10);
	struct virtq_seg segs[2] = {
		{ (uintptr_t)req, 24, false },
		{ (uintptr_t)resp, 10, true },
	};
	int err = virtq_submit_wait(d, segs, 2, NULL, virtio_io_timeout());
	if (err)
		return err;
	return resp[0] | (resp[1] << 8);
}

/* Writes then checks one word per page of [from, to); returns the pages that read back. */
static uint64_t touch(uint64_t from, uint64_t to)
{
	for (uint64_t a = from; a < to; a += PAGE)
		*(volatile uint64_t *)(uintptr_t)a = word_for(a);
	uint64_t ok = 0;
	for (uint64_t a = from; a < to; a += PAGE)
		ok += *(volatile uint64_t *)(uintptr_t)a == word_for(a);
	return ok;
}

static uint64_t verify(uint64_t from, uint64_t to)
{
	uint64_t ok = 0;
	for (uint64_t a = from; a < to; a += PAGE)
		ok += *(volatile uint64_t *)(uintptr_t)a == word_for(a);
	return ok;
}

int scenario_mem(void)
{
	struct virtio_mmio_dev m;
	struct virtio_dev d;
	if (virtio_find(VIRTIO_ID_MEM, 0, &m)) {
		kprintf("TEST fail mem no-virtio-mem\n");
		return 1;
	}
	int err = virtio_init(&d, &m, FEATURE(F_UNPLUGGED_INACCESSIBLE));
	if (err) {
		kprintf("TEST fail mem init %s status=%#x\n", virtio_strerror(err), virtio_status(&d));
		return 1;
	}
	uint64_t bs = virtio_config_read64(&d, CFG_BLOCK_SIZE);
	uint64_t base = virtio_config_read64(&d, CFG_ADDR);
	uint64_t size = virtio_config_read64(&d, CFG_REGION_SIZE);
	kprintf("TEST info virtio-mem base=%#lx irq=%u features=%#lx addr=%#lx region=%#lx block=%#lx\n",
		d.base, d.irq, d.features, base, size, bs);
	if (!bs || (bs & (bs - 1)) || !size || size % bs || map_high(base, size)) {
		kprintf("TEST fail mem bad region or cannot map it\n");
		return 1;
	}
	uint64_t khz = tsc_khz();
	if (cmdline_get(g_boot.cmdline, "squibtest.tsc_khz", NULL))
		khz = cmdline_get_u64(g_boot.cmdline, "squibtest.tsc_khz", khz);
	uint64_t chunk = cmdline_get_u64(g_boot.cmdline, "squibtest.mem_chunk", 65535);
	if (chunk == 0 || chunk > 65535)
		chunk = 65535;
	kprintf("TEST info mem ready plugged=%lu requested=%lu\n",
		virtio_config_read64(&d, CFG_PLUGGED), virtio_config_read64(&d, CFG_REQUESTED));

	uint64_t deadline = rdtsc() +
		cmdline_get_u64(g_boot.cmdline, "squibtest.timeout_ms", 120000) * tsc_khz();
	uint64_t plugged = 0, max_plugged = 0, t0 = 0;  /* blocks */
	uint32_t requests = 0;
	bool busy = false, verified = false;
	uint16_t last_type = REQ_PLUG;
	for (;;) {
		if (rdtsc() > deadline) {
			kprintf("TEST fail mem timeout plugged=%lu blocks\n", plugged);
			return 1;
		}
		uint64_t want = virtio_config_read64(&d, CFG_REQUESTED) / bs;
		if (want == plugged) {
			if (busy) {
				uint64_t us = (rdtsc() - t0) * 1000 / khz;
				busy = false;
				if (last_type == REQ_PLUG) {
					kprintf("TEST info mem plugged mib=%lu us=%lu requests=%u\n",
						plugged * bs >> 20, us, requests);
					uint64_t ok = touch(base, base + plugged * bs);
					kprintf("TEST info mem checked mib=%lu pages=%lu ok=%lu\n",
						plugged * bs >> 20, plugged * bs / PAGE, ok);
				} else {
					uint64_t v = *(volatile uint64_t *)(uintptr_t)(base + plugged * bs);
					kprintf("TEST info mem unplugged mib=%lu us=%lu unplugged_read=%#lx\n",
						plugged * bs >> 20, us, v);
				}
				verified = false;
			}
			if (max_plugged > 0 && plugged == 0 && want == 0)
				break;
			udelay(1000);
			continue;
		}
		if (!busy) {
			if (want < plugged && !verified) {
				uint64_t ok = verify(base, base + plugged * bs);
				kprintf("TEST info mem verify pages=%lu ok=%lu\n", plugged * bs / PAGE, ok);
				verified = true;
			}
			busy = true;
			t0 = rdtsc();
		}
		uint64_t n = want > plugged ? want - plugged : plugged - want;
		if (n > chunk)
			n = chunk;
		uint16_t type = want > plugged ? REQ_PLUG : REQ_UNPLUG;
		last_type = type;
		uint64_t addr = base + (want > plugged ? plugged : plugged - n) * bs;
		int r = mem_request(&d, type, addr, (uint16_t)n);
		requests++;
		if (r != RESP_ACK) {
			kprintf("TEST fail mem %s addr=%#lx blocks=%lu response=%d\n",
				type == REQ_PLUG ? "plug" : "unplug", addr, n, r);
			return 1;
		}
		plugged = type == REQ_PLUG ? plugged + n : plugged - n;
		if (plugged > max_plugged)
			max_plugged = plugged;
	}
	if (virtio_report("mem", &d))
		return 1;
	kprintf("TEST ok mem max_mib=%lu requests=%u\n", max_plugged * bs >> 20, requests);
	return 0;
}
