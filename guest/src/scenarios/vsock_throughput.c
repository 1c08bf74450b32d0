/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vsock-throughput: one connection to host port squibtest.port (default 52), two
 * timed phases of squibtest.mib MiB (default 8) each:
 *   g2h  the guest sends pattern seed 1 (byte i = i % 251 + 1); the host answers one
 *        byte 'g' once it has read it all;
 *   h2g  the host then sends pattern seed 2; the guest checks every byte and answers 'h'.
 * Then the guest closes. Markers for host-timed benches: VSOCK-T0/T1 g2h|h2g. The guest's
 * own rates (TSC; 0 when the TSC frequency is not announced):
 *   TEST ok vsock-throughput bytes=<n> g2h_cycles=<c> h2g_cycles=<c> tsc_khz=<k>
 *           g2h_mib_s=<x.xx> h2g_mib_s=<y.yy>
 * squibtest.timeout_ms (default 120000) bounds each phase.
 */
#include "../virtio_vsock.h"

#define CHUNK (64 * 1024)

static struct vsock_dev g_vsock;
static uint8_t stage[CHUNK];

static void print_rate(const char *key, uint64_t bytes, uint64_t cycles, uint64_t khz)
{
	uint64_t us = khz ? cycles * 1000 / khz : 0, x100 = us ? bytes * 100 * 1000000 / us >> 20 : 0;
	kprintf(" %s=%lu.%02lu", key, x100 / 100, x100 % 100);
}

/* Polls until `c` has `n` unread bytes (or fails). */
static int wait_readable(struct vsock_dev *v, struct vsock_conn *c, uint32_t n, uint64_t budget,
			 const char *what)
{
	uint64_t start = rdtsc();
	while (c->ring_len < n) {
		vsock_poll(v);
		if (vsock_peer_done(c) && c->ring_len < n) {
			kprintf("TEST fail vsock-throughput %s closed rst=%u\n", what, c->got_rst);
			return 1;
		}
		if (rdtsc() - start > budget) {
			kprintf("TEST fail vsock-throughput %s timeout\n", what);
			return 1;
		}
		cpu_relax();
	}
	return 0;
}

static int send_all(struct vsock_dev *v, struct vsock_conn *c, uint64_t bytes, uint64_t budget)
{
	struct vsock_pattern p = { 0, 1 };
	uint64_t gen = 0, start = rdtsc();
	uint32_t off = 0, len = 0;
	while (off < len || gen < bytes) {
		if (off == len) {
			len = (uint32_t)(bytes - gen < CHUNK ? bytes - gen : CHUNK);
			vsock_pattern_fill(&p, stage, len);
			gen += len;
			off = 0;
		}
		off += vsock_send(v, c, stage + off, len - off);
		if (off < len) {
			vsock_poll(v);
			if (c->state != VSOCK_ESTABLISHED) {
				kprintf("TEST fail vsock-throughput g2h closed rst=%u sent=%lu\n",
					c->got_rst, c->tx_bytes);
				return 1;
			}
			if (rdtsc() - start > budget) {
				kprintf("TEST fail vsock-throughput g2h timeout sent=%lu\n", c->tx_bytes);
				return 1;
			}
		}
	}
	return 0;
}

static int recv_all(struct vsock_dev *v, struct vsock_conn *c, uint64_t bytes, uint64_t budget)
{
	struct vsock_pattern p = { 0, 2 };
	uint64_t got = 0, start = rdtsc();
	while (got < bytes) {
		vsock_poll(v);
		const uint8_t *data;
		uint32_t n;
		while (got < bytes && (n = vsock_peek(c, &data)) != 0) {
			if (n > bytes - got)
				n = (uint32_t)(bytes - got);
			uint32_t ok = vsock_pattern_check(&p, data, n);
			if (ok != n) {
				kprintf("TEST fail vsock-throughput h2g mismatch offset=%lu got=%u\n",
					got + ok, data[ok]);
				return 1;
			}
			got += n;
			vsock_consume(v, c, n);
		}
		if (got < bytes && vsock_peer_done(c) && !c->ring_len) {
			kprintf("TEST fail vsock-throughput h2g closed got=%lu rst=%u\n", got,
				c->got_rst);
			return 1;
		}
		if (rdtsc() - start > budget) {
			kprintf("TEST fail vsock-throughput h2g timeout got=%lu\n", got);
			return 1;
		}
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
	struct vsock_conn *c = NULL;
	int err = vsock_connect(v, port, budget, &c);
	if (err) {
		kprintf("TEST fail vsock-throughput connect %s port=%u\n", vsock_strerror(err), port);
		return 1;
	}

	kprintf("VSOCK-T0 g2h\n");
	uint64_t t0 = rdtsc();
	if (send_all(v, c, bytes, budget) || wait_readable(v, c, 1, budget, "g2h-ack"))
		return 1;
	uint64_t g2h = rdtsc() - t0;
	kprintf("VSOCK-T1 g2h\n");
	uint8_t ack = 0;
	vsock_recv(v, c, &ack, 1);
	if (ack != 'g') {
		kprintf("TEST fail vsock-throughput g2h-ack byte=%u\n", ack);
		return 1;
	}

	kprintf("VSOCK-T0 h2g\n");
	uint64_t t1 = rdtsc();
	if (recv_all(v, c, bytes, budget))
		return 1;
	uint64_t h2g = rdtsc() - t1;
	kprintf("VSOCK-T1 h2g\n");
	ack = 'h';
	uint64_t start = rdtsc();
	while (vsock_send(v, c, &ack, 1) != 1) {
		vsock_poll(v);
		if (c->state != VSOCK_ESTABLISHED || rdtsc() - start > budget) {
			kprintf("TEST fail vsock-throughput h2g-ack\n");
			return 1;
		}
	}
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
