/*
 * loadgen_conn.c - the client connections every mode uses: connect (from
 * one of --source-addrs), a fixed line buffer that hands out lines and
 * skips IMAP literals without copying them, writes that try the socket
 * first and queue only the rest, per-response deadlines swept by the tick;
 * and the small parsers of IMAP, POP3 and LMTP responses, and the
 * generated messages.
 */
#include "loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* Lines are kept whole up to the buffer size less this margin; a longer
 * line is handed out in pieces, always keeping this many bytes back, so a
 * literal marker "{n}" at its end is never cut. */
#define TAIL_KEEP 32
#define LITERAL_MAX (UINT64_C(1) << 40)

static lg_conn *open_list;
static uint64_t open_count;

/* ------------------------------------------------------------ lifecycle */

int lg_conn_init(lg_conn *c, size_t bufsize, bool imap, lg_line_fn on_line,
                 lg_close_fn on_close, void *owner, int index)
{
	memset(c, 0, sizeof *c);
	if (bufsize < 4 * TAIL_KEEP)
		bufsize = 4 * TAIL_KEEP;
	c->in = malloc(bufsize);
	if (c->in == NULL)
		return -1;
	c->in_cap = bufsize;
	c->imap = imap;
	c->on_line = on_line;
	c->on_close = on_close;
	c->owner = owner;
	c->index = index;
	return 0;
}

void lg_conn_free(lg_conn *c)
{
	free(c->in);
	free(c->out);
	free(c->pend);
	c->in = c->out = c->pend = NULL;
}

uint64_t lg_conn_count(void)
{
	return open_count;
}

static void list_add(lg_conn *c)
{
	c->prev_open = NULL;
	c->next_open = open_list;
	if (open_list != NULL)
		open_list->prev_open = c;
	open_list = c;
	open_count++;
}

static void list_del(lg_conn *c)
{
	if (c->prev_open != NULL)
		c->prev_open->next_open = c->next_open;
	else
		open_list = c->next_open;
	if (c->next_open != NULL)
		c->next_open->prev_open = c->prev_open;
	c->next_open = c->prev_open = NULL;
	open_count--;
}

static void on_closed(uv_handle_t *h)
{
	lg_conn *c = h->data;
	const char *why = c->why[0] != '\0' ? c->why : NULL;

	c->open = false;
	c->closing = false;
	c->writing = false;
	list_del(c);
	c->on_close(c, why);
}

static void conn_close(lg_conn *c)
{
	if (!c->open || c->closing)
		return;
	c->closing = true;
	c->deadline = 0;
	uv_read_stop((uv_stream_t *)&c->tcp);
	uv_close((uv_handle_t *)&c->tcp, on_closed);
}

void lg_conn_close(lg_conn *c)
{
	conn_close(c);
}

void lg_conn_fail(lg_conn *c, const char *fmt, ...)
{
	va_list ap;

	if (!c->open || c->closing)
		return;
	va_start(ap, fmt);
	vsnprintf(c->why, sizeof c->why, fmt, ap);
	va_end(ap);
	if (c->why[0] == '\0')
		snprintf(c->why, sizeof c->why, "failed");
	conn_close(c);
}

void lg_conn_close_all(void)
{
	lg_conn *c, *next;

	for (c = open_list; c != NULL; c = next) {
		next = c->next_open;
		if (!c->closing)
			lg_conn_fail(c, "stopped before the end");
	}
}

void lg_conn_arm(lg_conn *c)
{
	c->deadline = lg_now() + lg.timeout_ns;
}

void lg_conn_disarm(lg_conn *c)
{
	c->deadline = 0;
}

void lg_conn_sweep(uint64_t now)
{
	lg_conn *c, *next;

	for (c = open_list; c != NULL; c = next) {
		next = c->next_open;
		if (c->deadline != 0 && now > c->deadline && !c->closing)
			lg_conn_fail(c, "no answer within %.1f s (%s)", lg.o.timeout,
			             c->op != NULL ? c->op->name
			             : c->connected ? "awaiting a reply" : "connecting");
	}
}

/* ----------------------------------------------------------------- input */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	lg_conn *c = h->data;

	buf->base = c->in + c->in_len;
	buf->len = c->in_cap - c->in_len;
}

/* "{123}" or "{123+}" at the end of S: an IMAP literal follows. */
static bool literal_at_end(const char *s, size_t n, uint64_t *len)
{
	size_t j;
	uint64_t v = 0, mul = 1;

	if (n < 3 || s[n - 1] != '}')
		return false;
	j = n - 2;
	if (s[j] == '+')
		j--;
	if (j == 0 || s[j] < '0' || s[j] > '9')
		return false;
	while (j > 0 && s[j] >= '0' && s[j] <= '9') {
		if (mul > LITERAL_MAX)
			return false;
		v += (uint64_t)(s[j] - '0') * mul;
		mul *= 10;
		j--;
	}
	if (s[j] != '{')
		return false;
	*len = v;
	return true;
}

/* Hand out every complete line in the buffer, skip literal bytes, and
 * keep the rest for the next read. */
static void parse_input(lg_conn *c)
{
	size_t pos = 0;

	while (pos < c->in_len && c->open && !c->closing) {
		const char *p = c->in + pos;
		size_t avail = c->in_len - pos, n, len;
		const char *nl;
		unsigned flags;
		uint64_t lit;

		if (c->literal_left > 0) {
			size_t take = avail < c->literal_left ? avail : (size_t)c->literal_left;

			pos += take;
			c->literal_left -= take;
			continue;
		}
		nl = memchr(p, '\n', avail);
		flags = c->cont ? 0 : LG_FIRST;
		if (nl == NULL) {
			if (avail + 2 * TAIL_KEEP < c->in_cap)
				break;
			/* A line longer than the buffer: hand out its head. */
			n = avail - TAIL_KEEP;
			c->cont = true;
			pos += n;
			c->on_line(c, p, n, flags);
			continue;
		}
		len = (size_t)(nl - p);
		n = len > 0 && p[len - 1] == '\r' ? len - 1 : len;
		pos += len + 1;
		if (c->imap && literal_at_end(p, n, &lit)) {
			if (lit > LITERAL_MAX) {
				lg_conn_fail(c, "literal of %llu octets", (unsigned long long)lit);
				return;
			}
			c->literal_left = lit;
			c->cont = true;
			flags |= LG_LITERAL;
		} else {
			c->cont = false;
			flags |= LG_END;
		}
		c->on_line(c, p, n, flags);
	}
	if (!c->open || c->closing)
		return;
	if (pos > 0 && pos < c->in_len)
		memmove(c->in, c->in + pos, c->in_len - pos);
	c->in_len -= pos;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	lg_conn *c = s->data;

	if (nread < 0) {
		if (nread == UV_EOF && c->eof_ok)
			lg_conn_close(c);
		else if (nread == UV_EOF)
			lg_conn_fail(c, "connection closed by the server%s%s",
			             c->op != NULL ? " awaiting " : "",
			             c->op != NULL ? c->op->name : "");
		else
			lg_conn_fail(c, "read: %s", uv_strerror((int)nread));
		return;
	}
	if (nread == 0)
		return;
	c->in_len += (size_t)nread;
	c->bytes_in += (uint64_t)nread;
	/* The timeout bounds silence, not the whole of a long response. */
	if (c->deadline != 0)
		c->deadline = lg_now() + lg.timeout_ns;
	parse_input(c);
}

/* ---------------------------------------------------------------- output */

static void start_write(lg_conn *c, const char *p, size_t n);

static void on_written(uv_write_t *req, int status)
{
	lg_conn *c = req->data;
	char *tmp;

	c->writing = false;
	if (status == UV_ECANCELED || !c->open || c->closing)
		return;
	if (status < 0) {
		lg_conn_fail(c, "write: %s", uv_strerror(status));
		return;
	}
	if (c->pend_len > 0) {
		/* Swap: the queued bytes become the ones in flight. */
		size_t cap = c->out_cap, n = c->pend_len;

		tmp = c->out;
		c->out = c->pend;
		c->out_cap = c->pend_cap;
		c->pend = tmp;
		c->pend_cap = cap;
		c->pend_len = 0;
		start_write(c, c->out, n);
	}
}

static void start_write(lg_conn *c, const char *p, size_t n)
{
	uv_buf_t b = uv_buf_init((char *)(uintptr_t)p, (unsigned)n);
	int rc;

	c->write_req.data = c;
	rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
	if (rc != 0) {
		lg_conn_fail(c, "write: %s", uv_strerror(rc));
		return;
	}
	c->writing = true;
}

static bool grow(char **buf, size_t *cap, size_t need)
{
	size_t ncap = *cap ? *cap : 4096;
	char *nb;

	while (ncap < need)
		ncap *= 2;
	if (ncap == *cap)
		return true;
	nb = realloc(*buf, ncap);
	if (nb == NULL)
		return false;
	*buf = nb;
	*cap = ncap;
	return true;
}

static void conn_write(lg_conn *c, const char *p, size_t n, bool keep_ref)
{
	int rc;

	if (!c->open || c->closing || n == 0)
		return;
	if (c->writing || !c->connected) {
		if (!grow(&c->pend, &c->pend_cap, c->pend_len + n)) {
			lg_conn_fail(c, "out of memory");
			return;
		}
		memcpy(c->pend + c->pend_len, p, n);
		c->pend_len += n;
		return;
	}
	{
		uv_buf_t b = uv_buf_init((char *)(uintptr_t)p, (unsigned)n);

		rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	}
	if (rc == UV_EAGAIN || rc == UV_ENOSYS)
		rc = 0;
	if (rc < 0) {
		lg_conn_fail(c, "write: %s", uv_strerror(rc));
		return;
	}
	if ((size_t)rc == n)
		return;
	p += rc;
	n -= (size_t)rc;
	if (keep_ref) {
		start_write(c, p, n);
		return;
	}
	if (!grow(&c->out, &c->out_cap, n)) {
		lg_conn_fail(c, "out of memory");
		return;
	}
	memcpy(c->out, p, n);
	start_write(c, c->out, n);
}

void lg_conn_send(lg_conn *c, const void *p, size_t n)
{
	conn_write(c, p, n, false);
}

void lg_conn_send_ref(lg_conn *c, const void *p, size_t n)
{
	conn_write(c, p, n, true);
}

static void vcmd(lg_conn *c, lg_stat *op, bool tagged, const char *fmt, va_list ap)
	LG_PRINTF(4, 0);

static void vcmd(lg_conn *c, lg_stat *op, bool tagged, const char *fmt, va_list ap)
{
	char buf[2048];
	size_t o = 0;
	int n;

	if (tagged) {
		c->tagno++;
		n = snprintf(c->tag, sizeof c->tag, "A%u", c->tagno);
		c->taglen = (size_t)n;
		memcpy(buf, c->tag, c->taglen);
		buf[c->taglen] = ' ';
		o = c->taglen + 1;
	}
	n = vsnprintf(buf + o, sizeof buf - o - 2, fmt, ap);
	if (n < 0 || (size_t)n >= sizeof buf - o - 2) {
		lg_conn_fail(c, "command too long");
		return;
	}
	o += (size_t)n;
	buf[o++] = '\r';
	buf[o++] = '\n';
	c->op = op;
	c->t_sent = lg_now();
	c->deadline = c->t_sent + lg.timeout_ns;
	lg_conn_send(c, buf, o);
}

void lg_conn_cmd(lg_conn *c, lg_stat *op, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vcmd(c, op, false, fmt, ap);
	va_end(ap);
}

void lg_imap_cmd(lg_conn *c, lg_stat *op, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vcmd(c, op, true, fmt, ap);
	va_end(ap);
}

void lg_conn_done(lg_conn *c)
{
	if (c->op != NULL)
		lg_stat_add(c->op, lg_now() - c->t_sent);
	c->op = NULL;
	c->deadline = 0;
}

void lg_conn_expect(lg_conn *c, lg_stat *op)
{
	c->op = op;
	lg_conn_arm(c);
}

/* --------------------------------------------------------------- connect */

static void on_connected(uv_connect_t *req, int status)
{
	lg_conn *c = req->data;
	int rc;

	if (status == UV_ECANCELED || !c->open || c->closing)
		return;
	if (status < 0) {
		lg_conn_fail(c, "connect: %s", uv_strerror(status));
		return;
	}
	c->connected = true;
	uv_tcp_nodelay(&c->tcp, 1);
	rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (rc != 0) {
		lg_conn_fail(c, "read: %s", uv_strerror(rc));
		return;
	}
	if (c->pend_len > 0) {
		/* Written before the connection was up (not done by the modes,
		 * which wait for a greeting, but kept correct). */
		size_t n = c->pend_len;
		char *tmp = c->out;
		size_t cap = c->out_cap;

		c->out = c->pend;
		c->out_cap = c->pend_cap;
		c->pend = tmp;
		c->pend_cap = cap;
		c->pend_len = 0;
		start_write(c, c->out, n);
	}
}

/* A socket bound to 127.0.0.(1 + index % N) before connecting: the port
 * is chosen at connect time (IP_BIND_ADDRESS_NO_PORT), so the ephemeral
 * ports are shared per destination and not used up by bind(). */
static int bound_socket(lg_conn *c)
{
	struct sockaddr_in sa;
	int fd, one = 1, rc;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(c->index % lg.o.source_addrs));
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	rc = uv_tcp_open(&c->tcp, fd);
	if (rc != 0)
		close(fd);
	return rc;
}

void lg_conn_connect(lg_conn *c, int port)
{
	struct sockaddr_storage ss;
	int rc;

	c->in_len = 0;
	c->literal_left = 0;
	c->cont = false;
	c->pend_len = 0;
	c->writing = false;
	c->connected = false;
	c->eof_ok = false;
	c->closing = false;
	c->why[0] = '\0';
	c->op = NULL;
	c->tagno = 0;
	c->taglen = 0;
	c->tcp.data = c;
	c->connect_req.data = c;
	uv_tcp_init(lg.loop, &c->tcp);
	c->tcp.data = c;
	c->open = true;
	list_add(c);
	c->t_sent = lg_now();
	c->deadline = c->t_sent + lg.timeout_ns;

	memset(&ss, 0, sizeof ss);
	if (strchr(lg.o.host, ':') != NULL) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, lg.o.host, &a->sin6_addr);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, lg.o.host, &a->sin_addr);
	}
	if (lg.o.source_addrs > 1) {
		rc = bound_socket(c);
		if (rc != 0) {
			lg_conn_fail(c, "bind: %s", uv_strerror(rc));
			return;
		}
	}
	rc = uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&ss, on_connected);
	if (rc != 0)
		lg_conn_fail(c, "connect: %s", uv_strerror(rc));
}

/* -------------------------------------------------------------- parsing */

static bool ci_prefix(const char *s, size_t n, const char *word)
{
	size_t k = strlen(word);

	return n >= k && strncasecmp(s, word, k) == 0;
}

int lg_imap_tagged(const lg_conn *c, const char *s, size_t n)
{
	if (c->taglen == 0 || n <= c->taglen || memcmp(s, c->tag, c->taglen) != 0 ||
	    s[c->taglen] != ' ')
		return LG_NOT_TAGGED;
	s += c->taglen + 1;
	n -= c->taglen + 1;
	if (ci_prefix(s, n, "OK") && (n == 2 || s[2] == ' '))
		return LG_OK;
	if (ci_prefix(s, n, "NO") && (n == 2 || s[2] == ' '))
		return LG_NO;
	if (ci_prefix(s, n, "BAD") && (n == 3 || s[3] == ' '))
		return LG_BAD;
	return LG_OTHER;
}

bool lg_imap_untagged_num(const char *s, size_t n, const char *word, uint64_t *num)
{
	size_t i = 2, k = strlen(word);
	uint64_t v = 0;

	if (n < 4 || s[0] != '*' || s[1] != ' ' || s[2] < '0' || s[2] > '9')
		return false;
	while (i < n && s[i] >= '0' && s[i] <= '9' && i < 22)
		v = v * 10 + (uint64_t)(s[i++] - '0');
	if (i >= n || s[i] != ' ')
		return false;
	i++;
	if (n - i < k || strncasecmp(s + i, word, k) != 0 || (n - i > k && s[i + k] != ' '))
		return false;
	*num = v;
	return true;
}

bool lg_find_num(const char *s, size_t n, const char *key, uint64_t *num)
{
	size_t k = strlen(key), i;

	for (i = 0; i + k < n; i++) {
		if (strncasecmp(s + i, key, k) != 0)
			continue;
		/* The key must start a word ("UID " not "XUID "). */
		if (i > 0 && s[i - 1] != ' ' && s[i - 1] != '(' && s[i - 1] != '[')
			continue;
		if (s[i + k] >= '0' && s[i + k] <= '9') {
			uint64_t v = 0;
			size_t j = i + k;

			while (j < n && s[j] >= '0' && s[j] <= '9' && j - i - k < 20)
				v = v * 10 + (uint64_t)(s[j++] - '0');
			*num = v;
			return true;
		}
	}
	return false;
}

const char *lg_excerpt(const char *s, size_t n)
{
	static char buf[128];
	size_t i, o = 0;

	for (i = 0; i < n && o + 1 < sizeof buf; i++) {
		unsigned char ch = (unsigned char)s[i];

		buf[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	buf[o] = '\0';
	return buf;
}

int lg_pop3_status(const char *s, size_t n)
{
	if (n >= 3 && memcmp(s, "+OK", 3) == 0)
		return 1;
	if (n >= 4 && memcmp(s, "-ERR", 4) == 0)
		return 0;
	return -1;
}

int lg_smtp_reply(const char *s, size_t n, bool *last)
{
	if (n < 3 || s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' ||
	    s[2] > '9')
		return -1;
	if (n > 3 && s[3] != ' ' && s[3] != '-')
		return -1;
	*last = n == 3 || s[3] == ' ';
	return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

const char *lg_imap_quote(char *buf, size_t cap, const char *s)
{
	size_t o = 0;

	buf[o++] = '"';
	for (; *s != '\0' && o + 3 < cap; s++) {
		if (*s == '"' || *s == '\\')
			buf[o++] = '\\';
		buf[o++] = *s;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

/* ------------------------------------------------------------- messages */

static const char *const words[] = {
	"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
	"india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
	"quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
	"xray", "yankee", "mail", "server", "store", "message", "benchmark",
	"latency", "client", "loop", "commit", "mailbox", "folder", "letter",
};

#define STAMP_DIGITS 16

int lg_msg_init(lg_msg *m, size_t size, uint64_t seed)
{
	static const char head[] =
		"From: Load Generator <loadgen@example.com>\r\n"
		"To: Bench <bench@example.com>\r\n"
		"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
		"Subject: loadgen message ";
	static const char mid[] = "\r\nMessage-ID: <";
	static const char tail[] = "@loadgen.example.com>\r\n"
		"MIME-Version: 1.0\r\n"
		"Content-Type: text/plain; charset=us-ascii\r\n"
		"\r\n";
	uint64_t rng = seed * 0x9e3779b97f4a7c15u + 1;
	size_t o = 0, line = 0, hlen;
	char *d;

	memset(m, 0, sizeof *m);
	hlen = sizeof head - 1 + STAMP_DIGITS + sizeof mid - 1 + STAMP_DIGITS + sizeof tail - 1;
	if (size < hlen + 4)
		size = hlen + 4;
	d = malloc(size);
	if (d == NULL)
		return -1;
	memcpy(d + o, head, sizeof head - 1);
	o += sizeof head - 1;
	m->stamp_off[0] = o;
	memset(d + o, '0', STAMP_DIGITS);
	o += STAMP_DIGITS;
	memcpy(d + o, mid, sizeof mid - 1);
	o += sizeof mid - 1;
	m->stamp_off[1] = o;
	memset(d + o, '0', STAMP_DIGITS);
	o += STAMP_DIGITS;
	memcpy(d + o, tail, sizeof tail - 1);
	o += sizeof tail - 1;

	/* Body: lines of words up to 72 columns; the last line is cut or
	 * padded so that the whole is exactly SIZE octets ending in CRLF. */
	while (o < size - 2) {
		const char *w = words[lg_rand(&rng) % (sizeof words / sizeof words[0])];
		size_t wl = strlen(w);

		if (line > 0 && line + 1 + wl > 72) {
			if (o + 2 > size - 2)
				break;
			d[o++] = '\r';
			d[o++] = '\n';
			line = 0;
			continue;
		}
		if (line > 0) {
			d[o++] = ' ';
			line++;
		}
		while (wl > 0 && o < size - 2) {
			d[o++] = *w++;
			wl--;
			line++;
		}
	}
	while (o < size - 2)
		d[o++] = 'x';
	d[o++] = '\r';
	d[o++] = '\n';
	m->data = d;
	m->len = o;
	return 0;
}

void lg_msg_stamp(lg_msg *m)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t v = lg.msg_nonce++;
	char digits[STAMP_DIGITS];
	int i;

	for (i = STAMP_DIGITS - 1; i >= 0; i--) {
		digits[i] = hex[v & 15];
		v >>= 4;
	}
	memcpy(m->data + m->stamp_off[0], digits, STAMP_DIGITS);
	memcpy(m->data + m->stamp_off[1], digits, STAMP_DIGITS);
}

void lg_msg_free(lg_msg *m)
{
	free(m->data);
	m->data = NULL;
}
