/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio 1.x over virtio-mmio (transport version 2), the subset this guest needs:
 *
 *   reset -> ACKNOWLEDGE -> DRIVER -> features (VERSION_1 + what the caller wants
 *   and the device offers) -> FEATURES_OK (checked) -> queue 0 -> DRIVER_OK
 *
 * Queue 0 is a split virtqueue of min(QueueNumMax, 16) entries (rounded down to
 * a power of two) in one static, page-aligned page: descriptor table at +0,
 * avail ring at +0x400, used ring at +0x800, and 1 KiB of scratch at +0xC00 for
 * request headers and status bytes. One request is in flight at a time; it
 * always uses descriptors 0..n-1. Completion is found by polling used->idx,
 * bounded by TSC time; no interrupts (the guest runs with IF=0). Every register
 * access is a single 32-bit mov (io.h), which is what Firecracker's MMIO
 * transport requires for the 0x000-0x0FF registers.
 */
#include "virtio_drv.h"

/* virtio-mmio register offsets (virtio 1.x §4.2.2). */
#define REG_MAGIC               0x000
#define REG_VERSION             0x004
#define REG_DEVICE_FEATURES     0x010
#define REG_DEVICE_FEATURES_SEL 0x014
#define REG_DRIVER_FEATURES     0x020
#define REG_DRIVER_FEATURES_SEL 0x024
#define REG_QUEUE_SEL           0x030
#define REG_QUEUE_NUM_MAX       0x034
#define REG_QUEUE_NUM           0x038
#define REG_QUEUE_READY         0x044
#define REG_QUEUE_NOTIFY        0x050
#define REG_INTERRUPT_STATUS    0x060
#define REG_INTERRUPT_ACK       0x064
#define REG_STATUS              0x070
#define REG_QUEUE_DESC_LOW      0x080
#define REG_QUEUE_DESC_HIGH     0x084
#define REG_QUEUE_DRIVER_LOW    0x090
#define REG_QUEUE_DRIVER_HIGH   0x094
#define REG_QUEUE_DEVICE_LOW    0x0A0
#define REG_QUEUE_DEVICE_HIGH   0x0A4
#define REG_CONFIG_GENERATION   0x0FC
#define REG_CONFIG              0x100

#define VIRTIO_MAGIC            0x74726976  /* "virt" */

#define VQ_PAGES                12          /* queues one boot can set up */
#define VQ_AVAIL_OFF            0x400
#define VQ_USED_OFF             0x800
#define VQ_SCRATCH_OFF          0xC00

#define IO_TIMEOUT_MS_DEFAULT   10000
#define RESET_TIMEOUT_MS        1000
#define STATUS_CHECK_MS         10          /* while polling, look at Status this often */
#define IRQ_WAIT_US             1000        /* wait for InterruptStatus after a completion */

/* .noinit: zeroing these at boot would cost real time where KVM emulates the guest. */
static uint8_t vq_pages[VQ_PAGES][4096] __attribute__((noinit, aligned(4096)));
static uint32_t vq_pages_used;
uint8_t virtio_io_buf[VIRTIO_IO_BUF_SIZE] __attribute__((noinit, aligned(4096)));

static uint32_t rd(const struct virtio_dev *d, uint32_t reg)
{
	return mmio_read32(d->base + reg);
}

static void wr(const struct virtio_dev *d, uint32_t reg, uint32_t v)
{
	mmio_write32(d->base + reg, v);
}

const char *virtio_strerror(int err)
{
	static const char *const names[] = {
		[VIRTIO_OK] = "ok",
		[VIRTIO_E_NODEV] = "no-device",
		[VIRTIO_E_MAGIC] = "bad-magic",
		[VIRTIO_E_LEGACY] = "legacy-transport",
		[VIRTIO_E_NO_VERSION_1] = "no-version-1",
		[VIRTIO_E_FEATURES] = "features-not-ok",
		[VIRTIO_E_NO_QUEUE] = "no-queue",
		[VIRTIO_E_QUEUE] = "queue-setup",
		[VIRTIO_E_CHAIN] = "chain-too-long",
		[VIRTIO_E_TIMEOUT] = "timeout",
		[VIRTIO_E_NEEDS_RESET] = "device-needs-reset",
		[VIRTIO_E_USED] = "bad-used-id",
		[VIRTIO_E_RESET] = "reset-failed",
		[VIRTIO_E_NO_QUEUE_MEM] = "no-queue-memory",
		[VIRTIO_E_BROKEN] = "device-unusable",
	};
	if (err < 0)
		err = -err;
	return (size_t)err < ARRAY_SIZE(names) && names[err] ? names[err] : "unknown";
}

uint64_t virtio_io_timeout(void)
{
	return cmdline_get_u64(g_boot.cmdline, "squibtest.io_timeout_ms", IO_TIMEOUT_MS_DEFAULT) *
	       tsc_khz();
}

int virtio_find(uint32_t device_id, uint32_t index, struct virtio_mmio_dev *out)
{
	struct virtio_mmio_dev devs[MAX_VIRTIO_MMIO];
	uint32_t n = virtio_mmio_discover(devs, MAX_VIRTIO_MMIO);
	for (uint32_t i = 0; i < n; i++) {
		if (devs[i].magic != VIRTIO_MAGIC || devs[i].device_id != device_id)
			continue;
		if (index-- == 0) {
			*out = devs[i];
			return 0;
		}
	}
	return -VIRTIO_E_NODEV;
}

uint32_t virtio_status(const struct virtio_dev *d)
{
	return rd(d, REG_STATUS);
}

uint32_t virtio_config_generation(const struct virtio_dev *d)
{
	return rd(d, REG_CONFIG_GENERATION);
}

uint32_t virtio_config_read32(const struct virtio_dev *d, uint32_t offset)
{
	return rd(d, REG_CONFIG + offset);
}

void virtio_config_write32(const struct virtio_dev *d, uint32_t offset, uint32_t v)
{
	wr(d, REG_CONFIG + offset, v);
}

uint64_t virtio_config_read64(const struct virtio_dev *d, uint32_t offset)
{
	uint32_t gen, lo, hi, tries = 0;
	do {
		gen = virtio_config_generation(d);
		lo = virtio_config_read32(d, offset);
		hi = virtio_config_read32(d, offset + 4);
	} while (gen != virtio_config_generation(d) && ++tries < 100);
	return ((uint64_t)hi << 32) | lo;
}

uint32_t virtio_ack_interrupts(struct virtio_dev *d)
{
	uint32_t isr = rd(d, REG_INTERRUPT_STATUS);
	if (isr) {
		wr(d, REG_INTERRUPT_ACK, isr);
		d->isr_seen |= isr;
	}
	return isr;
}

static void set_status(struct virtio_dev *d, uint32_t bits)
{
	wr(d, REG_STATUS, rd(d, REG_STATUS) | bits);
}

/* Write 0 to Status and wait until it reads back 0. A device that is still in
 * its reset state (Status already 0) is left alone: some VMMs treat a reset
 * write as a request to reset an activated device and do not expect it before. */
static int reset(struct virtio_dev *d)
{
	if (rd(d, REG_STATUS) == 0)
		return 0;
	wr(d, REG_STATUS, 0);
	uint64_t start = rdtsc(), budget = RESET_TIMEOUT_MS * tsc_khz();
	while (rd(d, REG_STATUS) != 0) {
		if (rdtsc() - start > budget)
			return -VIRTIO_E_RESET;
		udelay(100);
	}
	return 0;
}

static uint64_t read_device_features(struct virtio_dev *d)
{
	wr(d, REG_DEVICE_FEATURES_SEL, 1);
	uint64_t hi = rd(d, REG_DEVICE_FEATURES);
	wr(d, REG_DEVICE_FEATURES_SEL, 0);
	uint64_t lo = rd(d, REG_DEVICE_FEATURES);
	return (hi << 32) | lo;
}

static void write_driver_features(struct virtio_dev *d, uint64_t f)
{
	wr(d, REG_DRIVER_FEATURES_SEL, 1);
	wr(d, REG_DRIVER_FEATURES, (uint32_t)(f >> 32));
	wr(d, REG_DRIVER_FEATURES_SEL, 0);
	wr(d, REG_DRIVER_FEATURES, (uint32_t)f);
}

static struct virtq *queue(struct virtio_dev *d, uint32_t qi)
{
	return qi == 0 ? &d->vq : &d->xq[qi - 1];
}

static int setup_queue(struct virtio_dev *d, uint32_t qi)
{
	struct virtq *q = queue(d, qi);
	wr(d, REG_QUEUE_SEL, qi);
	if (rd(d, REG_QUEUE_READY) != 0)
		return -VIRTIO_E_QUEUE;
	d->queue_num_max = rd(d, REG_QUEUE_NUM_MAX);
	if (d->queue_num_max == 0)
		return -VIRTIO_E_NO_QUEUE;
	if (vq_pages_used >= VQ_PAGES)
		return -VIRTIO_E_NO_QUEUE_MEM;

	uint32_t size = d->queue_num_max < VIRTQ_MAX_SIZE ? d->queue_num_max : VIRTQ_MAX_SIZE;
	while (size & (size - 1))
		size &= size - 1;       /* round down to a power of two */
	uint8_t *page = vq_pages[vq_pages_used++];
	memset(page, 0, sizeof(vq_pages[0]));
	q->size = (uint16_t)size;
	q->avail_idx = 0;
	q->used_idx = 0;
	q->desc = (volatile struct virtq_desc *)page;
	q->avail = (volatile struct virtq_avail *)(page + VQ_AVAIL_OFF);
	q->used = (volatile struct virtq_used *)(page + VQ_USED_OFF);
	q->scratch = page + VQ_SCRATCH_OFF;

	uint64_t desc = (uintptr_t)q->desc, avail = (uintptr_t)q->avail, used = (uintptr_t)q->used;
	wr(d, REG_QUEUE_NUM, size);
	wr(d, REG_QUEUE_DESC_LOW, (uint32_t)desc);
	wr(d, REG_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
	wr(d, REG_QUEUE_DRIVER_LOW, (uint32_t)avail);
	wr(d, REG_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
	wr(d, REG_QUEUE_DEVICE_LOW, (uint32_t)used);
	wr(d, REG_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
	wr(d, REG_QUEUE_READY, 1);
	if (rd(d, REG_QUEUE_READY) != 1)
		return -VIRTIO_E_QUEUE;
	return 0;
}

int virtio_init(struct virtio_dev *d, const struct virtio_mmio_dev *m, uint64_t wanted)
{
	return virtio_init_queues(d, m, wanted, 1);
}

int virtio_init_queues(struct virtio_dev *d, const struct virtio_mmio_dev *m, uint64_t wanted,
		       uint32_t nqueues)
{
	memset(d, 0, sizeof(*d));
	d->base = m->base;
	d->irq = m->irq;
	d->device_id = m->device_id;
	if (rd(d, REG_MAGIC) != VIRTIO_MAGIC)
		return -VIRTIO_E_MAGIC;
	if (rd(d, REG_VERSION) != 2)
		return -VIRTIO_E_LEGACY;

	int err = reset(d);
	if (err)
		return err;
	set_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
	set_status(d, VIRTIO_STATUS_DRIVER);

	d->offered = read_device_features(d);
	if (!(d->offered & FEATURE(VIRTIO_F_VERSION_1))) {
		set_status(d, VIRTIO_STATUS_FAILED);
		return -VIRTIO_E_NO_VERSION_1;
	}
	d->features = (wanted & d->offered) | FEATURE(VIRTIO_F_VERSION_1);
	write_driver_features(d, d->features);
	set_status(d, VIRTIO_STATUS_FEATURES_OK);
	if (!(rd(d, REG_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
		set_status(d, VIRTIO_STATUS_FAILED);
		return -VIRTIO_E_FEATURES;
	}

	if (nqueues > VIRTIO_MAX_QUEUES)
		return -VIRTIO_E_NO_QUEUE;
	bool all = nqueues == 0;    /* every queue the device has (QueueNumMax != 0) */
	for (uint32_t qi = 0; qi < (all ? VIRTIO_MAX_QUEUES : nqueues); qi++) {
		if (all && qi > 0) {
			wr(d, REG_QUEUE_SEL, qi);
			if (rd(d, REG_QUEUE_NUM_MAX) == 0)
				break;
		}
		err = setup_queue(d, qi);
		if (err) {
			set_status(d, VIRTIO_STATUS_FAILED);
			return err;
		}
		d->num_queues = qi + 1;
	}
	set_status(d, VIRTIO_STATUS_DRIVER_OK);
	if (rd(d, REG_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
		return -VIRTIO_E_NEEDS_RESET;
	return 0;
}

int virtq_add(struct virtio_dev *d, uint32_t qi, const struct virtq_seg *segs, uint32_t n)
{
	if (d->broken)
		return -VIRTIO_E_BROKEN;
	if (qi >= d->num_queues)
		return -VIRTIO_E_NO_QUEUE;
	struct virtq *q = queue(d, qi);
	if (n == 0 || n > q->size)
		return -VIRTIO_E_CHAIN;
	for (uint32_t i = 0; i < n; i++) {
		q->desc[i].addr = segs[i].addr;
		q->desc[i].len = segs[i].len;
		q->desc[i].flags = (uint16_t)((i + 1 < n ? VIRTQ_DESC_F_NEXT : 0) |
					      (segs[i].device_writes ? VIRTQ_DESC_F_WRITE : 0));
		q->desc[i].next = (uint16_t)(i + 1 < n ? i + 1 : 0);
	}
	q->avail->ring[q->avail_idx % q->size] = 0;    /* head of the chain */
	barrier();                                      /* x86: stores stay in order */
	q->avail->idx = ++q->avail_idx;
	barrier();
	wr(d, REG_QUEUE_NOTIFY, qi);
	return 0;
}

int virtq_poll(struct virtio_dev *d, uint32_t qi, uint32_t *used_len)
{
	if (qi >= d->num_queues)
		return -VIRTIO_E_NO_QUEUE;
	struct virtq *q = queue(d, qi);
	if (q->used->idx == q->used_idx)
		return 0;
	barrier();
	volatile struct virtq_used_elem *e = &q->used->ring[q->used_idx % q->size];
	uint32_t id = e->id, len = e->len;
	q->used_idx++;
	d->requests++;
	/* Without VIRTIO_F_EVENT_IDX and with avail->flags = 0 the device must notify. It
	 * may set InterruptStatus just after publishing the used entry: give it a moment,
	 * so the bit is acknowledged here and not left pending. */
	uint64_t t0 = rdtsc(), irq_budget = IRQ_WAIT_US * tsc_khz() / 1000;
	while (!(virtio_ack_interrupts(d) & VIRTIO_INT_USED_RING)) {
		if (rdtsc() - t0 > irq_budget) {
			d->irq_missing++;
			break;
		}
		udelay(10);
	}
	if (used_len)
		*used_len = len;
	if (id != 0) {
		d->broken = VIRTIO_E_USED;
		return -VIRTIO_E_USED;
	}
	return 1;
}

int virtq_submit_wait_q(struct virtio_dev *d, uint32_t qi, const struct virtq_seg *segs,
			uint32_t n, uint32_t *used_len, uint64_t timeout_cycles)
{
	int err = virtq_add(d, qi, segs, n);
	if (err)
		return err;
	uint64_t start = rdtsc(), next_check = STATUS_CHECK_MS * tsc_khz();
	for (;;) {
		int done = virtq_poll(d, qi, used_len);
		if (done < 0)
			return done;
		if (done)
			return 0;
		uint64_t elapsed = rdtsc() - start;
		if (elapsed > next_check) {
			if (rd(d, REG_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
				d->broken = VIRTIO_E_NEEDS_RESET;
				return -VIRTIO_E_NEEDS_RESET;
			}
			next_check += STATUS_CHECK_MS * tsc_khz();
		}
		if (elapsed > timeout_cycles) {
			d->broken = VIRTIO_E_TIMEOUT;
			return -VIRTIO_E_TIMEOUT;
		}
		cpu_relax();
	}
}

int virtq_submit_wait(struct virtio_dev *d, const struct virtq_seg *segs, uint32_t n,
		      uint32_t *used_len, uint64_t timeout_cycles)
{
	return virtq_submit_wait_q(d, 0, segs, n, used_len, timeout_cycles);
}

int virtio_report(const char *name, const struct virtio_dev *d)
{
	uint32_t status = virtio_status(d);
	kprintf("TEST info %s requests=%u used_irq_missing=%u status=%#x\n", name, d->requests,
		d->irq_missing, status);
	if (status & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
		kprintf("TEST fail %s device-needs-reset\n", name);
		return 1;
	}
	return 0;
}

uint64_t fnv1a64(uint64_t h, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}
