/*
 * pushfloor.c - onebox-pushfloor, a do-nothing IMAP + LMTP server that
 * exists only to measure.  The benchmark's idle scenario (bench.py) runs
 * `onebox-loadgen idle` against it after onebox and Dovecot, unchanged, to
 * show the push latency this machine allows at all: one thread, one libuv
 * loop, no store, no sessions, and per delivery nothing but one write of
 * "* n EXISTS" to every idle connection after the LMTP 250.  It answers
 * just enough IMAP (LOGIN, SELECT, IDLE, DONE, LOGOUT) and LMTP (RFC 2033)
 * for the generator; it is not a mail server and is never installed.
 *
 *   onebox-pushfloor --imap-port N --lmtp-port N [--max-conns N]
 *
 * 127.0.0.1 only; port 0 picks a free one.  It prints "PORTS imap=N lmtp=N"
 * on stdout once listening; SIGTERM or SIGINT ends it with status 0.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <uv.h>

#define LINE_MAX_BYTES (64 * 1024)      /* a longer line closes the connection */
#define TAG_MAX 64
#define SEND_STR(c, s) send_bytes((c), (s), sizeof(s) - 1)

enum proto { P_IMAP, P_LMTP };
enum lmtp_state { L_START, L_MAIL, L_DATA };

struct conn {
	uv_tcp_t tcp;
	uv_shutdown_t shut;
	enum proto proto;
	bool closing;           /* uv_close called */
	bool quitting;          /* LOGOUT or QUIT: no more input, no more output */
	char *in;
	size_t len, cap;
	/* IMAP: the idle list, in the order connections entered IDLE. */
	bool idling;
	char idle_tag[TAG_MAX + 1];
	struct conn *prev, *next;
	/* LMTP */
	enum lmtp_state lst;
	unsigned rcpts;
};

struct wreq {
	uv_write_t req;
	char data[];
};

static uv_loop_t *loop;
static uv_tcp_t imap_srv, lmtp_srv;
static uv_signal_t sig_term, sig_int;
static struct conn *idle_head, *idle_tail;
static uint64_t exists;                 /* messages delivered so far */
static long nconns, max_conns = 20000;

static void idle_leave(struct conn *c)
{
	if (!c->idling)
		return;
	*(c->prev != NULL ? &c->prev->next : &idle_head) = c->next;
	*(c->next != NULL ? &c->next->prev : &idle_tail) = c->prev;
	c->prev = c->next = NULL;
	c->idling = false;
}

static void on_closed(uv_handle_t *h)
{
	struct conn *c = h->data;

	free(c->in);
	free(c);
}

static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	idle_leave(c);
	nconns--;
	uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *req, int status)
{
	struct conn *c = req->handle->data;

	free(req);
	if (status < 0 && status != UV_ECANCELED)
		conn_close(c);
}

/* Try the socket first; queue a copy of what it did not take.  libuv's
 * uv_try_write fails with EAGAIN while writes are queued, so order holds. */
static void send_bytes(struct conn *c, const char *p, size_t n)
{
	uv_buf_t b = uv_buf_init((char *)(uintptr_t)p, (unsigned)n);
	struct wreq *w;
	int rc;

	if (c->closing || c->quitting)
		return;
	rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (rc == UV_EAGAIN)
		rc = 0;
	if (rc < 0) {
		conn_close(c);
		return;
	}
	if ((size_t)rc == n)
		return;
	w = malloc(sizeof *w + n - (size_t)rc);
	if (w == NULL) {
		conn_close(c);
		return;
	}
	memcpy(w->data, p + rc, n - (size_t)rc);
	b = uv_buf_init(w->data, (unsigned)(n - (size_t)rc));
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
		free(w);
		conn_close(c);
	}
}

static void sendf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sendf(struct conn *c, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > 0)
		send_bytes(c, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* Close once the queued replies are written (LOGOUT, QUIT). */
static void on_shutdown(uv_shutdown_t *req, int status)
{
	conn_close(req->handle->data);
}

static void hang_up(struct conn *c)
{
	if (c->closing || c->quitting)
		return;
	c->quitting = true;
	uv_read_stop((uv_stream_t *)&c->tcp);
	if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
		conn_close(c);
}

static bool word_is(const char *s, size_t n, const char *w)
{
	size_t k = strlen(w);

	return n >= k && strncasecmp(s, w, k) == 0 && (n == k || s[k] == ' ');
}

/* ------------------------------------------------------------------ IMAP */

static void imap_line(struct conn *c, const char *s, size_t n)
{
	const char *sp = memchr(s, ' ', n);
	size_t tl = sp != NULL ? (size_t)(sp - s) : n;
	const char *cmd = sp != NULL ? sp + 1 : s + n;
	size_t cl = n - (size_t)(cmd - s);

	if (c->idling) {
		/* RFC 2177 §3: only DONE may follow; its tagged OK ends IDLE. */
		idle_leave(c);
		if (n == 4 && strncasecmp(s, "DONE", 4) == 0)
			sendf(c, "%s OK done\r\n", c->idle_tag);
		else
			sendf(c, "%s BAD expected DONE\r\n", c->idle_tag);
		return;
	}
	if (tl == 0 || tl > TAG_MAX || cl == 0) {
		SEND_STR(c, "* BAD tag and command expected\r\n");
		return;
	}
	if (s[n - 1] == '}') {
		/* No command the generator sends has a literal: refuse rather
		 * than read its bytes as commands. */
		sendf(c, "%.*s BAD literals not supported\r\n", (int)tl, s);
		hang_up(c);
	} else if (word_is(cmd, cl, "LOGIN") || word_is(cmd, cl, "NOOP") ||
	           word_is(cmd, cl, "ENABLE")) {
		sendf(c, "%.*s OK done\r\n", (int)tl, s);
	} else if (word_is(cmd, cl, "CAPABILITY")) {
		sendf(c, "* CAPABILITY IMAP4rev1 IDLE\r\n%.*s OK done\r\n", (int)tl, s);
	} else if (word_is(cmd, cl, "SELECT") || word_is(cmd, cl, "EXAMINE")) {
		sendf(c, "* %" PRIu64 " EXISTS\r\n* FLAGS ()\r\n* OK [UIDVALIDITY 1] x\r\n"
		      "* OK [UIDNEXT %" PRIu64 "] x\r\n%.*s OK [READ-WRITE] done\r\n",
		      exists, exists + 1, (int)tl, s);
	} else if (word_is(cmd, cl, "IDLE")) {
		memcpy(c->idle_tag, s, tl);
		c->idle_tag[tl] = '\0';
		c->idling = true;
		c->next = NULL;
		c->prev = idle_tail;
		*(idle_tail != NULL ? &idle_tail->next : &idle_head) = c;
		idle_tail = c;
		SEND_STR(c, "+ idling\r\n");
	} else if (word_is(cmd, cl, "LOGOUT")) {
		sendf(c, "* BYE bye\r\n%.*s OK done\r\n", (int)tl, s);
		hang_up(c);
	} else {
		sendf(c, "%.*s BAD unknown command\r\n", (int)tl, s);
	}
}

/* ------------------------------------------------------------------ LMTP */

/* The end of a message: one 250 per recipient (RFC 2033 §4.2), then the
 * push, one write per idle connection, oldest IDLE first. */
static void lmtp_delivered(struct conn *c)
{
	struct conn *i, *next;
	char line[48];
	int n;
	unsigned k;

	exists++;
	for (k = 0; k < c->rcpts; k++)
		SEND_STR(c, "250 2.0.0 ok\r\n");
	c->lst = L_START;
	c->rcpts = 0;
	n = snprintf(line, sizeof line, "* %" PRIu64 " EXISTS\r\n", exists);
	for (i = idle_head; i != NULL; i = next) {
		next = i->next;
		send_bytes(i, line, (size_t)n);
	}
}

static void lmtp_line(struct conn *c, const char *s, size_t n)
{
	if (c->lst == L_DATA) {
		if (n == 1 && s[0] == '.')
			lmtp_delivered(c);
		return;         /* the message itself is not kept */
	}
	if (word_is(s, n, "LHLO")) {
		SEND_STR(c, "250-pushfloor\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n");
	} else if (word_is(s, n, "MAIL")) {
		c->lst = L_MAIL;
		c->rcpts = 0;
		SEND_STR(c, "250 2.1.0 ok\r\n");
	} else if (word_is(s, n, "RCPT")) {
		if (c->lst != L_MAIL || c->rcpts >= 1000) {
			SEND_STR(c, "503 5.5.1 MAIL first\r\n");
			return;
		}
		c->rcpts++;
		SEND_STR(c, "250 2.1.5 ok\r\n");
	} else if (word_is(s, n, "DATA")) {
		if (c->rcpts == 0) {
			SEND_STR(c, "503 5.5.1 RCPT first\r\n");
			return;
		}
		c->lst = L_DATA;
		SEND_STR(c, "354 go ahead\r\n");
	} else if (word_is(s, n, "RSET")) {
		c->lst = L_START;
		c->rcpts = 0;
		SEND_STR(c, "250 2.0.0 ok\r\n");
	} else if (word_is(s, n, "NOOP")) {
		SEND_STR(c, "250 2.0.0 ok\r\n");
	} else if (word_is(s, n, "QUIT")) {
		SEND_STR(c, "221 2.0.0 bye\r\n");
		hang_up(c);
	} else {
		SEND_STR(c, "500 5.5.2 unknown command\r\n");
	}
}

/* ----------------------------------------------------------- connections */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct conn *c = h->data;

	if (c->len == c->cap && c->cap < LINE_MAX_BYTES) {
		size_t ncap = c->cap ? 2 * c->cap : 1024;
		char *nb = realloc(c->in, ncap);

		if (nb != NULL) {
			c->in = nb;
			c->cap = ncap;
		}
	}
	/* A full buffer without a line end gives a zero-length buffer:
	 * libuv then reports UV_ENOBUFS and the connection is closed. */
	*buf = uv_buf_init(c->in + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = st->data;
	size_t pos = 0;

	if (nread < 0) {
		conn_close(c);
		return;
	}
	c->len += (size_t)nread;
	while (pos < c->len && !c->closing && !c->quitting) {
		char *nl = memchr(c->in + pos, '\n', c->len - pos);
		size_t n;

		if (nl == NULL)
			break;
		n = (size_t)(nl - (c->in + pos));
		if (n > 0 && c->in[pos + n - 1] == '\r')
			n--;
		if (c->proto == P_IMAP)
			imap_line(c, c->in + pos, n);
		else
			lmtp_line(c, c->in + pos, n);
		pos = (size_t)(nl - c->in) + 1;
	}
	if (c->closing || pos == 0)
		return;
	memmove(c->in, c->in + pos, c->len - pos);
	c->len -= pos;
}

static void on_accept(uv_stream_t *srv, int status)
{
	struct conn *c;

	if (status < 0)
		return;
	c = calloc(1, sizeof *c);
	if (c == NULL || uv_tcp_init(loop, &c->tcp) != 0) {
		free(c);
		return;
	}
	c->tcp.data = c;
	c->proto = srv == (uv_stream_t *)&imap_srv ? P_IMAP : P_LMTP;
	nconns++;
	if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0 || nconns > max_conns) {
		conn_close(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	if (c->proto == P_IMAP)
		SEND_STR(c, "* OK pushfloor ready\r\n");
	else
		SEND_STR(c, "220 pushfloor LMTP ready\r\n");
	if (!c->closing && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
		conn_close(c);
}

static int listen_on(uv_tcp_t *srv, int port, int *bound)
{
	struct sockaddr_in sa;
	struct sockaddr_storage got;
	int len = sizeof got, rc;

	uv_ip4_addr("127.0.0.1", port, &sa);
	uv_tcp_init(loop, srv);
	rc = uv_tcp_bind(srv, (const struct sockaddr *)&sa, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)srv, 4096, on_accept);
	if (rc == 0)
		rc = uv_tcp_getsockname(srv, (struct sockaddr *)&got, &len);
	if (rc != 0) {
		fprintf(stderr, "pushfloor: port %d: %s\n", port, uv_strerror(rc));
		return -1;
	}
	*bound = ntohs(((struct sockaddr_in *)&got)->sin_port);
	return 0;
}

static void on_signal(uv_signal_t *s, int signum)
{
	uv_stop(loop);
}

static long arg_num(const char *s, long lo, long hi)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "pushfloor: bad number %s\n", s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	int imap_port = -1, lmtp_port = -1, i;
	struct rlimit rl;

	for (i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--imap-port") == 0)
			imap_port = (int)arg_num(argv[i + 1], 0, 65535);
		else if (strcmp(argv[i], "--lmtp-port") == 0)
			lmtp_port = (int)arg_num(argv[i + 1], 0, 65535);
		else if (strcmp(argv[i], "--max-conns") == 0)
			max_conns = arg_num(argv[i + 1], 1, 10000000);
		else
			break;
	}
	if (i != argc || imap_port < 0 || lmtp_port < 0) {
		fprintf(stderr, "usage: onebox-pushfloor --imap-port N --lmtp-port N "
		        "[--max-conns N]\n");
		return 2;
	}
	/* Thousands of sockets: take the whole open-file allowance. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	loop = uv_default_loop();
	if (listen_on(&imap_srv, imap_port, &imap_port) != 0 ||
	    listen_on(&lmtp_srv, lmtp_port, &lmtp_port) != 0)
		return 1;
	uv_signal_init(loop, &sig_term);
	uv_signal_start(&sig_term, on_signal, SIGTERM);
	uv_signal_init(loop, &sig_int);
	uv_signal_start(&sig_int, on_signal, SIGINT);
	printf("PORTS imap=%d lmtp=%d\n", imap_port, lmtp_port);
	fflush(stdout);
	uv_run(loop, UV_RUN_DEFAULT);
	return 0;
}
