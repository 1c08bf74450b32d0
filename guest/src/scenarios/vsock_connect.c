/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vsock-connect: connect to host port squibtest.port (default 52) squibtest.conns
 * times (default 1), one connection at a time. On each, send squibtest.bytes
 * (default 4096; 0 = connect and close only) pattern bytes (seed = connection
 * index), read them back (the host echoes), compare, close (SHUTDOWN -> RST).
 *   VSOCK-T0 connect / VSOCK-T1 connect    around the whole loop (host-timed benches)
 *   TEST ok vsock-connect conns=<n> bytes=<total> connect_cycles=<mean REQUEST->RESPONSE>
 *           loop_cycles=<T0..T1> tsc_khz=<k|0> connect_us=<mean, if the TSC rate is known>
 * (A host that times the markers can calibrate the TSC with loop_cycles.)
 * When nobody listens on the host side the device answers RST:
 *   TEST info vsock-connect rst port=<p>   (first time)
 *   TEST ok vsock-connect rst=<n>          with squibtest.expect_rst=1, else TEST fail ...
 * squibtest.timeout_ms (default 30000) bounds each connect and each exchange.
 */
#include "../virtio_vsock.h"

#define STAGE_SIZE (16 * 1024)

static struct vsock_dev g_vsock;
static uint8_t stage[STAGE_SIZE];

/* Sends `bytes` pattern bytes and checks their echo. 0, or prints TEST fail. */
static int exchange(struct vsock_dev *v, struct vsock_conn *c, uint64_t bytes, uint8_t seed,
		    uint64_t budget)
{
	struct vsock_pattern out = { 0, seed }, in = { 0, seed };
	uint64_t gen = 0, recvd = 0, start = rdtsc();
	uint32_t stage_off = 0, stage_len = 0;
	while (recvd < bytes) {
		if (stage_off == stage_len && gen < bytes) {
			stage_len = (uint32_t)(bytes - gen < STAGE_SIZE ? bytes - gen : STAGE_SIZE);
			vsock_pattern_fill(&out, stage, stage_len);
			gen += stage_len;
			stage_off = 0;
		}
		if (stage_off < stage_len)
			stage_off += vsock_send(v, c, stage + stage_off, stage_len - stage_off);
		vsock_poll(v);
		const uint8_t *data;
		uint32_t n;
		while ((n = vsock_peek(c, &data)) != 0) {
			uint32_t ok = vsock_pattern_check(&in, data, n);
			if (ok != n) {
				kprintf("TEST fail vsock-connect mismatch offset=%lu got=%u\n",
					recvd + ok, data[ok]);
				return 1;
			}
			recvd += n;
			vsock_consume(v, c, n);
		}
		if (recvd < bytes && vsock_peer_done(c) && !c->ring_len) {
			kprintf("TEST fail vsock-connect short-echo got=%lu want=%lu rst=%u "
				"transport_reset=%u\n", recvd, bytes, c->got_rst, c->transport_reset);
			return 1;
		}
		if (rdtsc() - start > budget) {
			kprintf("TEST fail vsock-connect echo-timeout got=%lu sent=%lu want=%lu\n",
				recvd, c->tx_bytes, bytes);
			return 1;
		}
		cpu_relax();
	}
	return 0;
}

int scenario_vsock_connect(void)
{
	static const char name[] = "vsock-connect";
	struct vsock_dev *v = &g_vsock;
	uint32_t port = (uint32_t)cmdline_get_u64(g_boot.cmdline, "squibtest.port", 52);
	uint64_t conns = cmdline_get_u64(g_boot.cmdline, "squibtest.conns", 1);
	uint64_t bytes = cmdline_get_u64(g_boot.cmdline, "squibtest.bytes", 4096);
	bool expect_rst = cmdline_get_u64(g_boot.cmdline, "squibtest.expect_rst", 0) != 0;
	uint64_t budget =
		cmdline_get_u64(g_boot.cmdline, "squibtest.timeout_ms", 30000) * tsc_khz();
	if (vsock_open(v, name))
		return 1;

	uint64_t rsts = 0, connect_cycles = 0, ok = 0;
	kprintf("VSOCK-T0 connect\n");
	uint64_t loop_start = rdtsc();
	for (uint64_t i = 0; i < conns; i++) {
		struct vsock_conn *c = NULL;
		uint64_t t0 = rdtsc();
		int err = vsock_connect(v, port, budget, &c);
		if (err == -VSOCK_E_RESET) {
			if (!rsts++)
				kprintf("TEST info vsock-connect rst port=%u\n", port);
			if (!expect_rst) {
				kprintf("TEST fail vsock-connect rst port=%u conn=%lu\n", port, i);
				return 1;
			}
			continue;
		}
		if (err) {
			kprintf("TEST fail vsock-connect connect %s port=%u conn=%lu\n",
				vsock_strerror(err), port, i);
			vsock_report(name, v);
			return 1;
		}
		connect_cycles += rdtsc() - t0;
		if (expect_rst) {
			kprintf("TEST fail vsock-connect connected port=%u (expected rst)\n", port);
			return 1;
		}
		if (exchange(v, c, bytes, (uint8_t)i, budget)) {
			vsock_report(name, v);
			return 1;
		}
		err = vsock_close(v, c, budget);
		if (err) {
			kprintf("TEST fail vsock-connect close %s conn=%lu\n", vsock_strerror(err), i);
			return 1;
		}
		ok++;
	}
	uint64_t loop_cycles = rdtsc() - loop_start;
	kprintf("VSOCK-T1 connect\n");
	if (vsock_report(name, v))
		return 1;
	if (expect_rst) {
		kprintf("TEST ok vsock-connect rst=%lu\n", rsts);
		return 0;
	}
	uint64_t khz = tsc_khz_cpuid(NULL), mean = ok ? connect_cycles / ok : 0;
	kprintf("TEST ok vsock-connect conns=%lu bytes=%lu connect_cycles=%lu loop_cycles=%lu "
		"tsc_khz=%lu connect_us=%lu\n", ok, ok * bytes, mean, loop_cycles, khz,
		khz ? mean * 1000 / khz : 0);
	return 0;
}
