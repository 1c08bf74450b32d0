/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vsock-throughput: one connection to host port squibtest.port (default 52), two
 * timed phases of squibtest.mib MiB (default 8) each:
 *   g2h  the guest sends pattern seed 1 (virtio_vsock.h); the host checks it and answers
 *        one byte 'g' once it has it all;
 *   h2g  the guest answers 'r', the host sends pattern seed 2, the guest samples it (sink
 *        mode: first and last byte of every packet) and answers 'h' after the last byte.
 * Then the guest closes. The data moves without per-byte guest work (pattern-filled TX
 * slots, sink mode), so the figures measure the device path rather than the guest CPU.
 * Markers for host-timed benches: VSOCK-T0/T1 g2h|h2g. The guest's own rates (TSC; 0
 * when the TSC frequency is not announced):
 *   TEST ok vsock-throughput bytes=<n> g2h_cycles=<c> h2g_cycles=<c> tsc_khz=<k>
 *           g2h_mib_s=<x.xx> h2g_mib_s=<y.yy>
 * squibtest.timeout_ms (default 120000) bounds each phase.
 */
#include "../virtio_vsock.h"

static struct vsock_dev g_vsock;

static void print_rate(const char *key, uint64_t bytes, uint64_t cycles, uint64_t khz)
{
	uint64_t us = khz ? cycles * 1000 / khz : 0, x100 = us ? bytes * 100 * 1000000 / us >> 20 : 0;
	kprintf(" %s=%lu.%02lu", key, x100 / 100, x100 % 100);
}

/* Polls until `c` has an unread byte; returns it, or -1 after printing TEST fail. */
static int recv_byte(struct vsock_dev *v, struct vsock_conn *c, uint64_t budget, const char *what)
{
	uint64_t start = rdtsc();
	while (!c->ring_len) {
		vsock_poll(v);
		if (vsock_peer_done(c) && !c->ring_len) {
			kprintf("TEST fail vsock-throughput %s closed rst=%u\n", what, c->got_rst);
			return -1;
		}
		if (rdtsc() - start > budget) {
			kprintf("TEST fail vsock-throughput %s timeout\n", what);
			return -1;
		}
		cpu_relax();
	}
	uint8_t b = 0;
	vsock_recv(v, c, &b, 1);
	return b;
}

static int send_byte(struct vsock_dev *v, struct vsock_conn *c, uint8_t b, uint64_t budget)
{
	uint64_t start = rdtsc();
	while (vsock_send(v, c, &b, 1) != 1) {
		vsock_poll(v);
		if (c->state != VSOCK_ESTABLISHED || rdtsc() - start > budget) {
			kprintf("TEST fail vsock-throughput send-%c\n", b);
			return 1;
		}
	}
	return 0;
}

static int send_all(struct vsock_dev *v, struct vsock_conn *c, uint64_t bytes, uint64_t budget)
{
	uint64_t start = rdtsc();
	while (c->pattern_sent < bytes) {
		if (vsock_send_pattern(v, c, bytes - c->pattern_sent))
			continue;
		vsock_poll(v);
		if (c->state != VSOCK_ESTABLISHED) {
			kprintf("TEST fail vsock-throughput g2h closed rst=%u sent=%lu\n", c->got_rst,
				c->pattern_sent);
			return 1;
		}
		if (rdtsc() - start > budget) {
			kprintf("TEST fail vsock-throughput g2h timeout sent=%lu\n", c->pattern_sent);
			return 1;
		}
		cpu_relax();
	}
	return 0;
}

static int sink_all(struct vsock_dev *v, struct vsock_conn *c, uint64_t bytes, uint64_t budget)
{
	uint64_t start = rdtsc();
	while (c->sink_bytes < bytes) {
		vsock_poll(v);
		if (vsock_peer_done(c)) {
			kprintf("TEST fail vsock-throughput h2g closed got=%lu rst=%u\n", c->sink_bytes,
				c->got_rst);
			return 1;
		}
		if (rdtsc() - start > budget) {
			kprintf("TEST fail vsock-throughput h2g timeout got=%lu\n", c->sink_bytes);
			return 1;
		}
		cpu_relax();
	}
	if (c->sink_bytes != bytes || c->sink_bad) {
		kprintf("TEST fail vsock-throughput h2g got=%lu want=%lu bad_samples=%lu first_bad=%lu\n",
			c->sink_bytes, bytes, c->sink_bad, c->sink_bad_offset);
		return 1;
	}
	return 0;
}

int scenario_vsock_throughput(void)
{
	static const char name[] = "vsock-throughput";
	struct vsock_dev *v = &g_vsock;
	uint32_t port = (uint32_t)cmdline_get_u64(g_boot.cmdline, "squibtest.port", 52);
	uint64_t bytes = cmdline_get_u64(g_boot.cmdline, "squibtest.mib", 8) << 20;
	uint64_t budget =
		cmdline_get_u64(g_boot.cmdline, "squibtest.timeout_ms", 120000) * tsc_khz();
	if (vsock_open(v, name))
		return 1;
	vsock_pattern_slots(v, 1);
	struct vsock_conn *c = NULL;
	int err = vsock_connect(v, port, budget, &c);
	if (err) {
		kprintf("TEST fail vsock-throughput connect %s port=%u\n", vsock_strerror(err), port);
		return 1;
	}

	kprintf("VSOCK-T0 g2h\n");
	uint64_t t0 = rdtsc();
	if (send_all(v, c, bytes, budget))
		return 1;
	int ack = recv_byte(v, c, budget, "g2h-ack");
	uint64_t g2h = rdtsc() - t0;
	kprintf("VSOCK-T1 g2h\n");
	if (ack != 'g') {
		if (ack >= 0)
			kprintf("TEST fail vsock-throughput g2h-ack byte=%d\n", ack);
		return 1;
	}

	vsock_sink(c, 2);
	kprintf("VSOCK-T0 h2g\n");
	uint64_t t1 = rdtsc();
	if (send_byte(v, c, 'r', budget) || sink_all(v, c, bytes, budget))
		return 1;
	uint64_t h2g = rdtsc() - t1;
	kprintf("VSOCK-T1 h2g\n");
	if (send_byte(v, c, 'h', budget))
		return 1;
	err = vsock_close(v, c, budget);
	if (err)
		kprintf("TEST info vsock-throughput close %s\n", vsock_strerror(err));
	if (vsock_report(name, v))
		return 1;
	uint64_t khz = tsc_khz_cpuid(NULL);
	kprintf("TEST ok vsock-throughput bytes=%lu g2h_cycles=%lu h2g_cycles=%lu tsc_khz=%lu", bytes,
		g2h, h2g, khz);
	print_rate("g2h_mib_s", bytes, g2h, khz);
	print_rate("h2g_mib_s", bytes, h2g, khz);
	kprintf("\n");
	return 0;
}
