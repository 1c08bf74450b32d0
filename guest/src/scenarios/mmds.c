/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mmds: talk HTTP to the microVM metadata service over virtio-net, with a
 * minimal ARP + IPv4 + TCP client (one connection per request, in-order data
 * only, retransmission by timeout, closed with RST once the response is in).
 *
 * Parameters (squibtest.*):
 *   mmds_ip=<a.b.c.d>   MMDS address (default 169.254.169.254)
 *   ip=<a.b.c.d>        the guest's address (default 169.254.0.2)
 *   mmds_path=</p>      path to GET (default /)
 *   mmds_version=<1|2>  2 (default): PUT /latest/api/token with
 *                       X-metadata-token-ttl-seconds first, then GET with
 *                       X-metadata-token; 1: plain GET
 *   mmds_token=<0|1>    with version 2, 0 leaves the token off the GET (401)
 *   mmds_ttl=<s>        token TTL (default 60)
 *   mmds_json=1         send Accept: application/json
 *   mmds_reps=<n>       repeat the GET n times and report the mean latency
 *                       (only the last one is printed; the rate needs the TSC
 *                       rate from CPUID or squibtest.tsc_khz)
 *   mmds_hold=1         after the GET print MMDS-HOLD, wait for one test frame
 *                       (EtherType 0x88B5) from the host, GET again with the
 *                       same token, then echo that frame back (MACs swapped)
 *   timeout_ms=<ms>     per request (default 20000); the hold waits 10x that
 * Output:
 *   TEST info mmds arp mac=<mmds mac> len=<the ARP reply's Ethernet frame bytes>
 *   TEST info mmds req=<PUT|GET> status=<code> len=<body bytes> body=<escaped>
 *   TEST info mmds token=<token>
 *   TEST ok mmds status=<code of the last GET> body=<its body, escaped>
 * Bodies are printed with \n, \r, \\ and \xHH escapes, at most 512 bytes.
 */
#include "../virtio_net.h"

#define TIMEOUT_MS_DEFAULT      20000
#define RTO_MS_INITIAL          200
#define RTO_MS_MAX              2000
#define RESP_MAX                8192
#define REQ_MAX                 1024
#define TOKEN_MAX               256
#define PRINT_MAX               512
#define MSS                     1460
#define PORT_BASE               40000

struct mmds_client {
	struct net_dev n;
	uint8_t peer_mac[ETH_ALEN];
	uint32_t my_ip, peer_ip;
	uint16_t my_port, ip_id;
	uint32_t iss, snd_nxt, snd_una, rcv_nxt;
	bool established, fin, reset;
	uint8_t resp[RESP_MAX];
	uint32_t resp_len;
	uint64_t timeout;           /* TSC cycles per request */
};

static struct mmds_client cl;
static uint8_t frame[NET_FRAME_MAX];

static bool parse_ip(const char *key, uint32_t def, uint32_t *out)
{
	size_t len;
	const char *v = cmdline_get(g_boot.cmdline, key, &len);
	*out = def;
	if (!v)
		return true;
	uint32_t ip = 0;
	const char *s = v, *end = v + len;
	for (int i = 0; i < 4; i++) {
		const char *e;
		uint64_t octet = strtou64(s, &e, 10);
		if (e == s || octet > 255 || e > end)
			return false;
		ip = ip << 8 | (uint32_t)octet;
		s = e;
		if (i < 3 && (s >= end || *s++ != '.'))
			return false;
	}
	if (s != end)
		return false;
	*out = ip;
	return true;
}

static uint32_t csum_add(uint32_t sum, const uint8_t *p, uint32_t len)
{
	for (uint32_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put_eth(uint8_t *f, const uint8_t *dst, uint16_t type)
{
	memcpy(f, dst, ETH_ALEN);
	memcpy(f + ETH_ALEN, cl.n.mac, ETH_ALEN);
	net_put_be16(f + 12, type);
}

/* Frames go out unpadded, as Linux sends them (a 42-byte ARP request):
 * Firecracker's MMDS only takes ARP requests of exactly 28 payload bytes. */
static int send_frame(uint32_t len)
{
	int err = net_tx_send(&cl.n, frame, len);
	net_tx_kick(&cl.n);
	return err;
}

static int send_arp_request(void)
{
	static const uint8_t bcast[ETH_ALEN] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	uint8_t *a = frame + ETH_HLEN;
	put_eth(frame, bcast, ETHERTYPE_ARP);
	net_put_be16(a, 1);                 /* Ethernet */
	net_put_be16(a + 2, ETHERTYPE_IPV4);
	a[4] = ETH_ALEN;
	a[5] = 4;
	net_put_be16(a + 6, 1);             /* request */
	memcpy(a + 8, cl.n.mac, ETH_ALEN);
	net_put_be32(a + 14, cl.my_ip);
	memset(a + 18, 0, ETH_ALEN);
	net_put_be32(a + 24, cl.peer_ip);
	return send_frame(ETH_HLEN + 28);
}

/* One TCP segment with `flags`, our snd_nxt as seq (or `seq`), payload copied in. */
static int send_tcp(uint32_t seq, uint8_t flags, const void *data, uint32_t len)
{
	uint8_t *ip = frame + ETH_HLEN, *tcp = ip + 20;
	uint32_t opt = (flags & 0x02) ? 4 : 0;  /* MSS on SYN */
	uint32_t tcp_len = 20 + opt + len;
	put_eth(frame, cl.peer_mac, ETHERTYPE_IPV4);
	ip[0] = 0x45;
	ip[1] = 0;
	net_put_be16(ip + 2, (uint16_t)(20 + tcp_len));
	net_put_be16(ip + 4, cl.ip_id++);
	net_put_be16(ip + 6, 0x4000);       /* DF */
	ip[8] = 64;
	ip[9] = 6;
	net_put_be16(ip + 10, 0);
	net_put_be32(ip + 12, cl.my_ip);
	net_put_be32(ip + 16, cl.peer_ip);
	net_put_be16(ip + 10, csum_fold(csum_add(0, ip, 20)));

	net_put_be16(tcp, cl.my_port);
	net_put_be16(tcp + 2, 80);
	net_put_be32(tcp + 4, seq);
	net_put_be32(tcp + 8, (flags & 0x10) ? cl.rcv_nxt : 0);
	tcp[12] = (uint8_t)(((20 + opt) / 4) << 4);
	tcp[13] = flags;
	net_put_be16(tcp + 14, (uint16_t)(RESP_MAX - cl.resp_len));
	net_put_be16(tcp + 16, 0);
	net_put_be16(tcp + 18, 0);
	if (opt) {
		tcp[20] = 2;
		tcp[21] = 4;
		net_put_be16(tcp + 22, MSS);
	}
	memcpy(tcp + 20 + opt, data, len);
	uint8_t pseudo[12];
	net_put_be32(pseudo, cl.my_ip);
	net_put_be32(pseudo + 4, cl.peer_ip);
	pseudo[8] = 0;
	pseudo[9] = 6;
	net_put_be16(pseudo + 10, (uint16_t)tcp_len);
	net_put_be16(tcp + 16, csum_fold(csum_add(csum_add(0, pseudo, 12), tcp, tcp_len)));
	return send_frame(ETH_HLEN + 20 + tcp_len);
}

static int arp_resolve(void)
{
	uint64_t start = rdtsc(), rto = RTO_MS_INITIAL * tsc_khz(), next = 0;
	while (rdtsc() - start < cl.timeout) {
		if (rdtsc() - start >= next) {
			if (send_arp_request())
				return 1;
			next += rto;
		}
		uint8_t *f;
		uint32_t len;
		int r = net_rx_wait(&cl.n, &f, &len, rto / 4);
		if (r < 0)
			return 1;
		if (r == 0 || len < ETH_HLEN + 28 || net_be16(f + 12) != ETHERTYPE_ARP)
			continue;
		const uint8_t *a = f + ETH_HLEN;
		if (net_be16(a + 6) == 2 && net_be32(a + 14) == cl.peer_ip) {
			memcpy(cl.peer_mac, a + 8, ETH_ALEN);
			kprintf("TEST info mmds arp mac=%02x:%02x:%02x:%02x:%02x:%02x len=%u\n", a[8],
				a[9], a[10], a[11], a[12], a[13], len);
			return 0;
		}
	}
	kprintf("TEST fail mmds arp-timeout\n");
	return 1;
}

/* Handles one received frame of the current connection. Returns 1 if it carried
 * anything (so it deserves an ACK). */
static int tcp_input(const uint8_t *f, uint32_t len)
{
	if (len < ETH_HLEN + 40 || net_be16(f + 12) != ETHERTYPE_IPV4)
		return 0;
	const uint8_t *ip = f + ETH_HLEN;
	uint32_t ihl = (uint32_t)(ip[0] & 0xf) * 4, tot = net_be16(ip + 2);
	if ((ip[0] >> 4) != 4 || ihl < 20 || ip[9] != 6 || tot > len - ETH_HLEN || tot < ihl + 20 ||
	    net_be32(ip + 12) != cl.peer_ip || net_be32(ip + 16) != cl.my_ip)
		return 0;
	const uint8_t *tcp = ip + ihl;
	uint32_t doff = (uint32_t)(tcp[12] >> 4) * 4;
	if (net_be16(tcp) != 80 || net_be16(tcp + 2) != cl.my_port || doff < 20 || ihl + doff > tot)
		return 0;
	uint8_t flags = tcp[13];
	uint32_t seq = net_be32(tcp + 4), ack = net_be32(tcp + 8);
	const uint8_t *data = tcp + doff;
	uint32_t dlen = tot - ihl - doff;
	if (flags & 0x04) {                 /* RST */
		cl.reset = true;
		return 0;
	}
	if (!cl.established) {
		if ((flags & 0x12) == 0x12 && ack == cl.iss + 1) {
			cl.established = true;
			cl.rcv_nxt = seq + 1;
			cl.snd_una = ack;
			return 1;
		}
		return 0;
	}
	if ((flags & 0x10) && (int32_t)(ack - cl.snd_una) > 0 && (int32_t)(ack - cl.snd_nxt) <= 0)
		cl.snd_una = ack;
	if (seq != cl.rcv_nxt)
		return dlen || (flags & 0x01);  /* out of order: duplicate ACK */
	if (dlen > RESP_MAX - cl.resp_len)
		dlen = RESP_MAX - cl.resp_len;
	memcpy(cl.resp + cl.resp_len, data, dlen);
	cl.resp_len += dlen;
	cl.rcv_nxt += dlen;
	if (flags & 0x01) {
		cl.rcv_nxt++;
		cl.fin = true;
	}
	return dlen || (flags & 0x01);
}

static bool lower_eq(const uint8_t *a, const char *b, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint8_t c = a[i];
		if (c >= 'A' && c <= 'Z')
			c = (uint8_t)(c + 32);
		if (c != (uint8_t)b[i])
			return false;
	}
	return true;
}

/* Response complete? Sets *status, *body, *body_len when it is. */
static bool response_done(int *status, const uint8_t **body, uint32_t *body_len)
{
	uint32_t hdr_end = 0;
	for (uint32_t i = 0; i + 3 < cl.resp_len; i++)
		if (!memcmp(cl.resp + i, "\r\n\r\n", 4)) {
			hdr_end = i + 4;
			break;
		}
	if (!hdr_end)
		return cl.fin;
	uint64_t clen = (uint64_t)-1;
	for (uint32_t i = 0; i + 16 < hdr_end; i++)
		if (cl.resp[i] == '\n' && lower_eq(cl.resp + i + 1, "content-length:", 15)) {
			const char *s = (const char *)cl.resp + i + 16;
			while (*s == ' ')
				s++;
			clen = strtou64(s, NULL, 10);
			break;
		}
	if (clen != (uint64_t)-1 && cl.resp_len - hdr_end < clen && !cl.fin)
		return false;
	if (clen == (uint64_t)-1 && !cl.fin)
		return false;
	*status = cl.resp_len >= 12 && !memcmp(cl.resp, "HTTP/1.", 7) ?
		  (int)strtou64((const char *)cl.resp + 9, NULL, 10) : -1;
	*body = cl.resp + hdr_end;
	*body_len = cl.resp_len - hdr_end;
	if (clen != (uint64_t)-1 && *body_len > clen)
		*body_len = (uint32_t)clen;
	return true;
}

/* One HTTP exchange on a new connection. 0 on a complete response. */
static int http(const char *req, uint32_t req_len, int *status, const uint8_t **body,
		uint32_t *body_len)
{
	cl.my_port++;
	cl.iss = (uint32_t)rdtsc();
	cl.snd_una = cl.iss;
	cl.snd_nxt = cl.iss + 1;
	cl.rcv_nxt = 0;
	cl.established = cl.fin = cl.reset = false;
	cl.resp_len = 0;
	uint64_t start = rdtsc(), rto_ms = RTO_MS_INITIAL, next = 0;
	bool sent = false;
	while (rdtsc() - start < cl.timeout) {
		uint64_t el = rdtsc() - start;
		if (el >= next) {
			int err = !cl.established ? send_tcp(cl.iss, 0x02, NULL, 0) :
				  send_tcp(cl.iss + 1, 0x18, req, req_len);
			if (err)
				return 1;
			next = el + rto_ms * tsc_khz();
			rto_ms = rto_ms * 2 > RTO_MS_MAX ? RTO_MS_MAX : rto_ms * 2;
		}
		uint8_t *f;
		uint32_t len;
		int r = net_rx_wait(&cl.n, &f, &len, tsc_khz());
		if (r < 0)
			return 1;
		if (r == 0)
			continue;
		bool was = cl.established;
		int ack = tcp_input(f, len);
		net_rx_done(&cl.n);
		if (cl.reset) {
			kprintf("TEST info mmds connection-reset port=%u\n", cl.my_port);
			return 1;
		}
		if (!was && cl.established) {
			/* Handshake done: ACK rides on the request. */
			cl.snd_nxt = cl.iss + 1 + req_len;
			if (send_tcp(cl.iss + 1, 0x18, req, req_len))
				return 1;
			sent = true;
			rto_ms = RTO_MS_INITIAL;
			next = rdtsc() - start + rto_ms * tsc_khz();
			continue;
		}
		if (sent && cl.snd_una == cl.snd_nxt)
			next = (uint64_t)-1;    /* request acknowledged: no more resends */
		if (ack && send_tcp(cl.snd_nxt, 0x10, NULL, 0))
			return 1;
		if (response_done(status, body, body_len)) {
			send_tcp(cl.snd_nxt, 0x14, NULL, 0);    /* RST|ACK: done with it */
			return 0;
		}
	}
	kprintf("TEST info mmds request-timeout port=%u established=%u resp_len=%u\n", cl.my_port,
		cl.established, cl.resp_len);
	return 1;
}

static void print_escaped(const uint8_t *p, uint32_t len)
{
	if (len > PRINT_MAX)
		len = PRINT_MAX;
	for (uint32_t i = 0; i < len; i++) {
		uint8_t c = p[i];
		if (c == '\n')
			kprintf("\\n");
		else if (c == '\r')
			kprintf("\\r");
		else if (c == '\\')
			kprintf("\\\\");
		else if (c < 0x20 || c >= 0x7f)
			kprintf("\\x%02x", c);
		else
			serial_putc((char)c);
	}
}

static uint32_t append(char *dst, uint32_t at, const char *s, uint32_t n)
{
	if (at + n >= REQ_MAX)
		n = at < REQ_MAX - 1 ? REQ_MAX - 1 - at : 0;
	memcpy(dst + at, s, n);
	return at + n;
}

static uint32_t append_str(char *dst, uint32_t at, const char *s)
{
	return append(dst, at, s, (uint32_t)strlen(s));
}

static void print_result(const char *method, int status, const uint8_t *body, uint32_t len)
{
	kprintf("TEST info mmds req=%s status=%d len=%u body=", method, status, len);
	print_escaped(body, len);
	kprintf("\n");
}

/* Issue one request and (if `print`) print its `TEST info mmds req=...` line. */
static int request(const char *method, const char *req, uint32_t req_len, int *status,
		   const uint8_t **body, uint32_t *body_len, bool print)
{
	if (http(req, req_len, status, body, body_len)) {
		kprintf("TEST fail mmds %s no-response\n", method);
		return 1;
	}
	if (print)
		print_result(method, *status, *body, *body_len);
	return 0;
}

static char token[TOKEN_MAX + 1];

static uint32_t build_get(char *req, const char *path, size_t path_len, bool with_token,
			  bool json)
{
	uint32_t at = append_str(req, 0, "GET ");
	at = append(req, at, path, (uint32_t)path_len);
	at = append_str(req, at, " HTTP/1.1\r\nHost: 169.254.169.254\r\n");
	if (json)
		at = append_str(req, at, "Accept: application/json\r\n");
	if (with_token) {
		at = append_str(req, at, "X-metadata-token: ");
		at = append_str(req, at, token);
		at = append_str(req, at, "\r\n");
	}
	return append_str(req, at, "\r\n");
}

static int hold_and_echo(void)
{
	kprintf("MMDS-HOLD\n");
	uint64_t start = rdtsc(), budget = cl.timeout * 10;
	while (rdtsc() - start < budget) {
		uint8_t *f;
		uint32_t len;
		int r = net_rx_wait(&cl.n, &f, &len, budget - (rdtsc() - start));
		if (r < 0)
			return 1;
		if (r == 0)
			break;
		if (len < ETH_HLEN || len > NET_FRAME_MAX || net_be16(f + 12) != ETHERTYPE_TEST)
			continue;
		memcpy(frame, f + ETH_ALEN, ETH_ALEN);
		memcpy(frame + ETH_ALEN, f, ETH_ALEN);
		net_copy(frame + 2 * ETH_ALEN, f + 2 * ETH_ALEN, len - 2 * ETH_ALEN);
		net_rx_done(&cl.n);
		kprintf("TEST info mmds hold-released len=%u\n", len);
		return net_tx_send(&cl.n, frame, len) ? 1 : (net_tx_kick(&cl.n), 0);
	}
	kprintf("TEST fail mmds hold-timeout\n");
	return 1;
}

int scenario_mmds(void)
{
	static const char name[] = "mmds";
	static char req[REQ_MAX];
	if (net_open(&cl.n, name))
		return 1;
	if (!parse_ip("squibtest.mmds_ip", 0xA9FEA9FE, &cl.peer_ip) ||
	    !parse_ip("squibtest.ip", 0xA9FE0002, &cl.my_ip)) {
		kprintf("TEST fail mmds bad-ip-parameter\n");
		return 1;
	}
	cl.timeout = cmdline_get_u64(g_boot.cmdline, "squibtest.timeout_ms", TIMEOUT_MS_DEFAULT) *
		     tsc_khz();
	cl.my_port = (uint16_t)(PORT_BASE + (rdtsc() & 0xfff));
	uint64_t version = cmdline_get_u64(g_boot.cmdline, "squibtest.mmds_version", 2);
	bool use_token = cmdline_get_u64(g_boot.cmdline, "squibtest.mmds_token", 1) != 0;
	bool json = cmdline_get_u64(g_boot.cmdline, "squibtest.mmds_json", 0) != 0;
	uint64_t ttl = cmdline_get_u64(g_boot.cmdline, "squibtest.mmds_ttl", 60);
	uint64_t reps = cmdline_get_u64(g_boot.cmdline, "squibtest.mmds_reps", 1);
	size_t path_len;
	const char *path = cmdline_get(g_boot.cmdline, "squibtest.mmds_path", &path_len);
	if (!path || !path_len || path[0] != '/' || path_len > 256) {
		path = "/";
		path_len = 1;
	}
	if (reps == 0)
		reps = 1;
	if (arp_resolve())
		return 1;

	int status;
	const uint8_t *body;
	uint32_t body_len;
	if (version == 2) {
		uint32_t at = append_str(req, 0, "PUT /latest/api/token HTTP/1.1\r\n"
					 "Host: 169.254.169.254\r\nX-metadata-token-ttl-seconds: ");
		char num[24];
		uint32_t nl = 0;
		uint64_t t = ttl;
		do {
			num[nl++] = (char)('0' + t % 10);
			t /= 10;
		} while (t && nl < sizeof(num));
		for (uint32_t i = 0; i < nl; i++)
			at = append(req, at, &num[nl - 1 - i], 1);
		at = append_str(req, at, "\r\n\r\n");
		uint64_t t0 = rdtsc();
		if (request("PUT", req, at, &status, &body, &body_len, false))
			return 1;
		uint64_t put_cycles = rdtsc() - t0;
		print_result("PUT", status, body, body_len);
		kprintf("TEST info mmds put_token_tsc_cycles=%lu\n", put_cycles);
		if (status != 200 || body_len == 0 || body_len > TOKEN_MAX) {
			kprintf("TEST fail mmds token status=%d len=%u\n", status, body_len);
			return 1;
		}
		memcpy(token, body, body_len);
		token[body_len] = '\0';
		kprintf("TEST info mmds token=%s\n", token);
	}
	uint32_t len = build_get(req, path, path_len, version == 2 && use_token, json);
	uint64_t t0 = rdtsc();
	for (uint64_t i = 0; i < reps; i++)
		if (request("GET", req, len, &status, &body, &body_len, false))
			return 1;
	uint64_t cycles = rdtsc() - t0, khz = net_tsc_khz(NULL);
	print_result("GET", status, body, body_len);
	kprintf("TEST info mmds reps=%lu tsc_cycles=%lu tsc_khz=%lu us_per_get=%lu\n", reps, cycles,
		khz, khz ? cycles * 1000 / khz / reps : 0);
	if (cmdline_get_u64(g_boot.cmdline, "squibtest.mmds_hold", 0)) {
		if (hold_and_echo())
			return 1;
		if (request("GET", req, len, &status, &body, &body_len, true))
			return 1;
	}
	if (net_report(&cl.n, name))
		return 1;
	kprintf("TEST ok mmds status=%d body=", status);
	print_escaped(body, body_len);
	kprintf("\n");
	return 0;
}
