/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vsock-listen: listen on squibtest.port (default 52) and echo the bytes of every
 * host-initiated connection back until the host closes it.
 *   TEST info vsock-listen port=<p> cid=<cid> listening    (the host may connect now)
 *   TEST ok vsock-listen conns=<n> bytes=<m>               after squibtest.conns
 *                                                          (default 1) closed connections
 * squibtest.conns=0 serves forever (benchmarks, snapshots). squibtest.timeout_ms (default
 * 0 = none) fails the scenario if it is not done by then. A transport reset (snapshot
 * restore) drops the open connections, which are not counted; the driver prints
 * `TEST info vsock transport-reset`, and the guest keeps listening on the same port.
 * Up to VSOCK_MAX_CONNS connections are served at once; more get RST from the driver.
 */
#include "../virtio_vsock.h"

static struct vsock_dev g_vsock;

/* Echoes what the host can take right now. */
static void echo(struct vsock_dev *v, struct vsock_conn *c)
{
	const uint8_t *data;
	uint32_t n;
	while ((n = vsock_peek(c, &data)) != 0) {
		uint32_t sent = vsock_send(v, c, data, n);
		if (!sent)
			break;
		vsock_consume(v, c, sent);
	}
}

int scenario_vsock_listen(void)
{
	static const char name[] = "vsock-listen";
	struct vsock_dev *v = &g_vsock;
	uint32_t port = (uint32_t)cmdline_get_u64(g_boot.cmdline, "squibtest.port", 52);
	uint64_t want = cmdline_get_u64(g_boot.cmdline, "squibtest.conns", 1);
	uint64_t timeout_ms = cmdline_get_u64(g_boot.cmdline, "squibtest.timeout_ms", 0);
	if (vsock_open(v, name))
		return 1;
	vsock_listen(v, port);
	kprintf("TEST info vsock-listen port=%u cid=%lu listening\n", port, v->cid);

	struct vsock_conn *active[VSOCK_MAX_CONNS];
	uint32_t n_active = 0, resets = 0;
	uint64_t done = 0, bytes = 0, dropped = 0;
	uint64_t start = rdtsc(), budget = timeout_ms * tsc_khz();
	while (!want || done < want) {
		vsock_poll(v);
		if (v->broken)
			break;
		struct vsock_conn *c;
		while (n_active < VSOCK_MAX_CONNS && (c = vsock_accept(v)) != NULL)
			active[n_active++] = c;
		for (uint32_t i = 0; i < n_active; i++) {
			c = active[i];
			echo(v, c);
			if (c->state != VSOCK_CLOSED)
				continue;
			if (c->transport_reset) {
				dropped++;
			} else {
				done++;
				bytes += c->rx_bytes;
			}
			if (c->overflow)
				kprintf("TEST info vsock-listen overflow=%u port=%u\n", c->overflow,
					c->peer_port);
			vsock_release(v, c);
			active[i--] = active[--n_active];
		}
		if (v->transport_resets != resets) {
			resets = v->transport_resets;
			kprintf("TEST info vsock-listen port=%u cid=%lu listening again dropped=%lu\n",
				port, v->cid, dropped);
		}
		if (timeout_ms && rdtsc() - start > budget) {
			kprintf("TEST fail vsock-listen timeout conns=%lu bytes=%lu\n", done, bytes);
			vsock_report(name, v);
			return 1;
		}
		cpu_relax();
	}
	if (vsock_report(name, v))
		return 1;
	kprintf("TEST ok vsock-listen conns=%lu bytes=%lu\n", done, bytes);
	return 0;
}
