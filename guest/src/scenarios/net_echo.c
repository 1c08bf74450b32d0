/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net-echo: receive test frames (EtherType 0x88B5) from the host, swap the
 * source and destination MACs and send each back unchanged otherwise, until
 * squibtest.frames (default 8) were echoed or squibtest.timeout_ms (default
 * 60000) passed. Other frames are counted as ignored.
 *   NET-READY                            (RX buffers posted: the host may send)
 *   TEST ok net-echo frames=<n> bytes=<b> ignored=<i>
 */
#include "../virtio_net.h"

#define FRAMES_DEFAULT          8
#define TIMEOUT_MS_DEFAULT      60000

int scenario_net_echo(void)
{
	static const char name[] = "net-echo";
	struct net_dev n;
	if (net_open(&n, name))
		return 1;
	uint64_t want = cmdline_get_u64(g_boot.cmdline, "squibtest.frames", FRAMES_DEFAULT);
	uint64_t timeout = cmdline_get_u64(g_boot.cmdline, "squibtest.timeout_ms",
					   TIMEOUT_MS_DEFAULT) * tsc_khz();
	static uint8_t out[NET_FRAME_MAX];
	uint64_t echoed = 0, bytes = 0, ignored = 0, start = rdtsc();
	kprintf("NET-READY\n");
	while (echoed < want) {
		uint64_t el = rdtsc() - start;
		if (el > timeout) {
			kprintf("TEST fail net-echo timeout echoed=%lu ignored=%lu\n", echoed, ignored);
			net_report(&n, name);
			return 1;
		}
		uint8_t *f;
		uint32_t len;
		int r = net_rx_wait(&n, &f, &len, timeout - el);
		if (r < 0) {
			kprintf("TEST fail net-echo rx %s\n", virtio_strerror(r));
			return 1;
		}
		if (r == 0)
			continue;
		if (len < ETH_HLEN || len > NET_FRAME_MAX || net_be16(f + 12) != ETHERTYPE_TEST) {
			ignored++;
			continue;
		}
		memcpy(out, f + ETH_ALEN, ETH_ALEN);
		memcpy(out + ETH_ALEN, f, ETH_ALEN);
		net_copy(out + 2 * ETH_ALEN, f + 2 * ETH_ALEN, len - 2 * ETH_ALEN);
		net_rx_done(&n);
		int err = net_tx_send(&n, out, len);
		if (err) {
			kprintf("TEST fail net-echo tx %s\n", virtio_strerror(err));
			return 1;
		}
		net_tx_kick(&n);
		echoed++;
		bytes += len;
	}
	int err = net_tx_flush(&n, virtio_io_timeout());
	if (err) {
		kprintf("TEST fail net-echo flush %s\n", virtio_strerror(err));
		return 1;
	}
	if (net_report(&n, name))
		return 1;
	kprintf("TEST ok net-echo frames=%lu bytes=%lu ignored=%lu\n", echoed, bytes, ignored);
	return 0;
}
