/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net-tx: send squibtest.frames (default 8) test frames (virtio_net.h layout,
 * tag 'X', seq 0..N-1) to squibtest.dst (default ff:ff:ff:ff:ff:ff) from the
 * device's MAC, then wait until the device has used every TX buffer:
 *   TEST ok net-tx frames=<n> bytes=<frame bytes, headers excluded>
 * squibtest.frame_size=<60..1514> fixes the size (default 0: it varies with
 * seq, 60 + (seq * 367) % 1455, so one run covers short and full frames).
 */
#include "../virtio_net.h"

#define FRAMES_DEFAULT  8

static uint32_t frame_size(uint64_t fixed, uint32_t seq)
{
	if (fixed)
		return fixed < NET_FRAME_MIN ? NET_FRAME_MIN :
		       fixed > NET_FRAME_MAX ? NET_FRAME_MAX : (uint32_t)fixed;
	return NET_FRAME_MIN + (seq * 367u) % (NET_FRAME_MAX - NET_FRAME_MIN + 1);
}

int scenario_net_tx(void)
{
	static const char name[] = "net-tx";
	struct net_dev n;
	if (net_open(&n, name))
		return 1;
	uint64_t frames = cmdline_get_u64(g_boot.cmdline, "squibtest.frames", FRAMES_DEFAULT);
	uint64_t fixed = cmdline_get_u64(g_boot.cmdline, "squibtest.frame_size", 0);
	uint8_t dst[ETH_ALEN];
	if (!net_cmdline_mac("squibtest.dst", dst))
		memset(dst, 0xff, ETH_ALEN);
	uint64_t bytes = 0;
	for (uint32_t seq = 0; seq < frames; seq++) {
		uint32_t len = frame_size(fixed, seq);
		uint8_t *buf;
		uint64_t start = rdtsc();
		while (!(buf = net_tx_buf(&n))) {
			net_tx_kick(&n);
			if (n.broken || rdtsc() - start > virtio_io_timeout()) {
				kprintf("TEST fail net-tx no-tx-slot seq=%u\n", seq);
				return 1;
			}
			cpu_relax();
		}
		net_fill_test_frame(buf, len, dst, n.mac, 'X', seq);
		net_tx_commit(&n, len);
		bytes += len;
	}
	int err = net_tx_flush(&n, virtio_io_timeout());
	if (err) {
		kprintf("TEST fail net-tx flush %s\n", virtio_strerror(err));
		return 1;
	}
	if (net_report(&n, name))
		return 1;
	kprintf("TEST ok net-tx frames=%lu bytes=%lu\n", frames, bytes);
	return 0;
}
