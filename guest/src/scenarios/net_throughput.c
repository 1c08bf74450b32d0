/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net-throughput: timed bulk transfers through virtio-net, per frame size
 * (squibtest.frame_size=<60..1514>; default 0 = 1514 then 64) and direction
 * (squibtest.dir=tx|rx|both, default both; tx first):
 *   tx  send squibtest.frames (default 4096) frames, tag 'T', to
 *       squibtest.dst (default broadcast) and wait until all are used; the
 *       payload is the seq-0 test pattern in every frame (the TX buffers are
 *       filled once; per frame the guest only writes the sequence number, as
 *       guest code runs emulated and slowly on kvm_pvm hosts);
 *   rx  count test frames with tag 'R' and the phase's exact size until
 *       squibtest.rx_frames (default = frames) arrived or nothing came for
 *       squibtest.timeout_ms (default 120000); the host floods them.
 * Each phase is bracketed by `NET-T0 <dir> size=<s>` / `NET-T1 <dir> size=<s>`
 * (the host starts flooding at T0 rx and stops at T1 rx), then
 *   TEST info net-throughput dir=<d> size=<s> frames=<n> bytes=<b> tsc_cycles=<c>
 *        tsc_khz=<k> mib_s=<x.xx|0> fps=<f|0> [ignored=<other frames> (rx)]
 * squibtest.tsc_khz gives the TSC rate when CPUID does not. The guest's clock (TSC) times tx from the first frame queued to the last
 * one used, rx from the first to the last frame received.
 *   TEST ok net-throughput phases=<p>
 */
#include "../virtio_net.h"

#define FRAMES_DEFAULT          4096
#define TIMEOUT_MS_DEFAULT      120000

static void report(const char *dir, uint32_t size, uint64_t frames, uint64_t bytes,
		   uint64_t cycles, uint64_t khz)
{
	uint64_t mib_s_x100 = 0, fps = 0;
	if (khz) {
		uint64_t us = cycles * 1000 / khz;
		if (us) {
			mib_s_x100 = (bytes * 100 * 1000000 / us) >> 20;
			fps = frames * 1000000 / us;
		}
	}
	kprintf("TEST info net-throughput dir=%s size=%u frames=%lu bytes=%lu tsc_cycles=%lu "
		"tsc_khz=%lu mib_s=%lu.%02lu fps=%lu", dir, size, frames, bytes, cycles, khz,
		mib_s_x100 / 100, mib_s_x100 % 100, fps);
}

static int phase_tx(struct net_dev *n, uint32_t size, uint64_t frames, const uint8_t *dst,
		    uint64_t khz)
{
	static uint8_t tmpl[NET_FRAME_MAX];
	net_fill_test_frame(tmpl, size, dst, n->mac, 'T', 0);
	net_tx_prefill(n, tmpl, size);
	kprintf("NET-T0 tx size=%u\n", size);
	uint64_t t0 = rdtsc();
	int err = net_tx_bulk(n, frames, size, virtio_io_timeout());
	uint64_t cycles = rdtsc() - t0;
	kprintf("NET-T1 tx size=%u\n", size);
	if (err) {
		kprintf("TEST fail net-throughput tx %s\n", virtio_strerror(err));
		return 1;
	}
	report("tx", size, frames, frames * size, cycles, khz);
	kprintf("\n");
	return 0;
}

static int phase_rx(struct net_dev *n, uint32_t size, uint64_t frames, uint64_t timeout,
		    uint64_t khz)
{
	kprintf("NET-T0 rx size=%u\n", size);
	uint64_t t_first, t_last, ignored = 0;
	int64_t got = net_rx_bulk(n, frames, size, 'R', timeout, &t_first, &t_last, &ignored);
	kprintf("NET-T1 rx size=%u\n", size);
	if (got < 0) {
		kprintf("TEST fail net-throughput rx %s\n", virtio_strerror((int)got));
		return 1;
	}
	/* From the first to the last frame: got - 1 intervals. */
	uint64_t counted = got > 1 ? (uint64_t)got - 1 : 0;
	report("rx", size, (uint64_t)got, counted * size, t_last - t_first, khz);
	kprintf(" ignored=%lu\n", ignored);
	if ((uint64_t)got < frames) {
		kprintf("TEST fail net-throughput rx-timeout size=%u got=%ld want=%lu\n", size, got,
			frames);
		return 1;
	}
	return 0;
}

int scenario_net_throughput(void)
{
	static const char name[] = "net-throughput";
	struct net_dev n;
	if (net_open(&n, name))
		return 1;
	uint64_t frames = cmdline_get_u64(g_boot.cmdline, "squibtest.frames", FRAMES_DEFAULT);
	uint64_t rx_frames = cmdline_get_u64(g_boot.cmdline, "squibtest.rx_frames", frames);
	uint64_t fixed = cmdline_get_u64(g_boot.cmdline, "squibtest.frame_size", 0);
	uint64_t timeout = cmdline_get_u64(g_boot.cmdline, "squibtest.timeout_ms",
					   TIMEOUT_MS_DEFAULT) * tsc_khz();
	size_t dlen = 0;
	const char *dir = cmdline_get(g_boot.cmdline, "squibtest.dir", &dlen);
	bool tx = !dir || (dlen == 2 && !strncmp(dir, "tx", 2)) || (dlen == 4 && !strncmp(dir, "both", 4));
	bool rx = !dir || (dlen == 2 && !strncmp(dir, "rx", 2)) || (dlen == 4 && !strncmp(dir, "both", 4));
	uint8_t dst[ETH_ALEN];
	if (!net_cmdline_mac("squibtest.dst", dst))
		memset(dst, 0xff, ETH_ALEN);
	const char *src;
	uint64_t khz = net_tsc_khz(&src);
	kprintf("TEST info tsc_khz=%lu source=%s\n", khz, src);

	uint32_t sizes[2] = { NET_FRAME_MAX, 64 }, nsizes = 2;
	if (fixed) {
		sizes[0] = fixed < NET_FRAME_MIN ? NET_FRAME_MIN :
			   fixed > NET_FRAME_MAX ? NET_FRAME_MAX : (uint32_t)fixed;
		nsizes = 1;
	}
	uint32_t phases = 0;
	for (uint32_t i = 0; i < nsizes; i++) {
		if (tx) {
			if (phase_tx(&n, sizes[i], frames, dst, khz))
				return 1;
			phases++;
		}
		if (rx) {
			if (phase_rx(&n, sizes[i], rx_frames, timeout, khz))
				return 1;
			phases++;
		}
	}
	if (net_report(&n, name))
		return 1;
	kprintf("TEST ok net-throughput phases=%u\n", phases);
	return 0;
}
