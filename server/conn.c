/*
 * conn.c - the connection layer: one struct conn per client socket.
 *
 * It owns everything between the socket and a protocol front-end: reading
 * and splitting input into lines (or handing raw bytes), the output queue
 * and its backpressure, TLS on top of both (via tls.c), idle timers,
 * connection limits, a graceful close, and the session's log prefix.
 * Front-ends see only protocols/proto.h; the server sees server.h.
 *
 * A connection moves through enum conn_state.  Front-end callbacks run only
 * in CONN_OPEN; ops->close runs once, after the socket is closed and every
 * conn_hold is released, and then the conn is freed.
 *
 * The layers, from the socket up: TLS (tls.c), then DEFLATE compression
 * once a front-end turns it on (IMAP COMPRESS, RFC 4978), then the line
 * reader.  Input is decrypted, then inflated, into the plaintext buffer;
 * output is deflated, then encrypted, into the output queue.  The DEFLATE
 * layer may also end (UNAUTHENTICATE, RFC 8437), and start again.  Before
 * login the line reader also meters commands (limits.preauth_command_*).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define ZLIB_CONST /* next_in is const */
#include <zlib.h>

#include "server/server.h"
#include "server/tls_internal.h"

#define OUT_CHUNK (16 * 1024)      /* small writes are coalesced into these */
#define OUT_CHUNK_MAX (256 * 1024) /* a large write gets chunks up to this */
#define WRITE_MAX_BUFS 64          /* chunks handed to one uv_write */
#define IN_GROW (16 * 1024)        /* input buffer growth step */
#define IN_BYTES_READ (64 * 1024)  /* room offered to a read in bytes mode */
#define IN_MIN_LIMIT (16 * 1024)   /* stop reading above this at the least */
/* After conn_close, queued output must keep moving or we give up. */
#define CLOSE_LINGER_MS 10000
#define STOP_LINGER_MS 3000        /* the same while the server stops */
/* After our FIN, read and drop what the client still sends, so that closing
 * with unread input does not send a RST that could destroy our last
 * response in the client's receive buffer. */
#define SHUTDOWN_LINGER_MS 2000
#define USER_MAX 256               /* longest user name kept for the log */

/*
 * COMPRESS=DEFLATE (RFC 4978).  What we send uses a 4 KiB window and
 * memLevel 5: zlib then needs 2^(12+2) + 2^(5+9) = 32 KiB plus its ~6 KiB
 * state, against 256 KiB with the defaults, and IMAP responses repeat
 * themselves over short distances anyway.  RFC 4978 section 4 suggests a
 * cheap level; 5 is a middle one.  What we receive must be inflated with
 * the full 32 KiB window, whatever the client chose (RFC 1951 allows
 * back-references that far): ~7 KiB of state plus the window.  Compressed
 * input waits in a buffer of ZIN_CAP, allocated only while it holds bytes.
 * docs/security.md gives the total per compressed connection.
 */
#define DEFLATE_WBITS 12
#define DEFLATE_MEMLEVEL 5
#define DEFLATE_LEVEL 5
#define INFLATE_WBITS 15
#define DEFLATE_CHUNK (8 * 1024)   /* deflate's output is handed on in these */
#define ZIN_CAP (16 * 1024)        /* compressed input buffered at most */

enum conn_state {
	CONN_HANDSHAKE, /* TLS handshake running; no input for the front-end */
	CONN_OPEN,      /* the front-end gets input */
	CONN_FLUSHING,  /* conn_close: sending what is queued, reading nothing */
	CONN_SHUTDOWN,  /* our FIN is sent; reading and dropping until EOF */
	CONN_CLOSING,   /* uv_close called on the handles */
	CONN_CLOSED,    /* handles closed; waiting for holds to be released */
};

struct out_chunk {
	struct out_chunk *next;
	size_t off;    /* octets already written (by uv_try_write) */
	size_t len, cap;
	bool inflight; /* part of the uv_write in progress */
	char data[];
};

/* The DEFLATE layer of a connection (NULL until conn_compress_start). */
struct conn_z {
	z_stream def;      /* what we send */
	z_stream inf;      /* what the client sends */
	char *in;          /* compressed input not yet inflated; NULL when empty */
	size_t in_off, in_len, in_cap;
	bool def_pending;  /* deflate holds bytes not yet flushed to the wire */
	bool inf_end;      /* the client ended its stream (inflate said so) */
	/* conn_compress_stop ran: our stream is ended and def freed, output
	 * is clear; input is inflated until the client's stream ends, and
	 * what follows that end is clear input (RFC 8437 section 4.1). */
	bool stopping;
};

struct conn {
	uv_stream_t *stream; /* uv_tcp_t or uv_pipe_t, malloc'd by the listener */
	uv_timer_t timer;    /* idle, stalled output, close linger */
	uv_idle_t defer;     /* work "after the current callback chain" */
	uv_write_t wreq;     /* at most one write in flight */
	uv_shutdown_t sreq;
	unsigned handles_open;

	struct server *srv;
	const struct proto_ops *ops;
	void *sess;
	struct conn *next, **pprev; /* srv->conns */
	uint64_t id;
	enum conn_state state;
	unsigned holds;
	bool finished;

	/* input (plaintext) */
	char *in;
	size_t in_off, in_len, in_cap;
	size_t in_limit;      /* stop reading while this much is buffered */
	unsigned in_epoch;    /* bumped when buffered input is thrown away */
	bool bytes_mode;
	bool paused;
	bool discarding;      /* inside an over-long line */
	bool eof;             /* no more input will come from the peer */
	bool reading;
	bool processing;
	bool process_pending; /* deferred process_input (conn_resume, drain) */

	/* output */
	struct out_chunk *out_head, *out_tail;
	size_t queued;        /* bytes not yet completed by the kernel */
	size_t inflight;      /* of which in the current uv_write */
	bool writing;
	bool congested;       /* set above max_output, cleared below 1/4 */

	/* TLS */
	struct tls_sess *tls;
	bool tls_up;          /* handshake done */
	char *tls_hold;       /* plaintext written during a STARTTLS handshake */
	size_t tls_hold_len;

	/* COMPRESS: between TLS and the plaintext buffers */
	struct conn_z *z;

	/* Commands before login: a token bucket in thousandths of a command,
	 * refilled at limits.preauth_command_rate per second up to
	 * limits.preauth_command_burst.  An empty bucket stops input
	 * processing (throttled) until the timer says a command is due. */
	bool authed;          /* conn_set_user named a user */
	bool throttled;
	bool throttle_logged; /* said so in the log once */
	uint64_t tokens;
	uint64_t refill_at;   /* uv_now() of the last refill */
	uint64_t throttle_until;

	/* timers, in uv_now() milliseconds */
	uint64_t timeout_ms;  /* the front-end's idle timeout; 0: none */
	uint64_t last_input;
	uint64_t last_output; /* last progress of the output queue */
	uint64_t phase_start; /* start of the handshake or of the shutdown */

	/* accounting and logs */
	uint64_t started;
	uint64_t bytes_in, bytes_out;
	bool counted;       /* in srv->nconns (see release_slot) */
	bool addr_counted;  /* in srv->per_addr */
	unsigned char addr[16]; /* IPv6, or IPv4-mapped IPv6 */
	unsigned auth_failures; /* failed logins on this connection (auth.c) */
	char *user;
	char peer[64];
};

static void process_input(conn *c);
static void flush(conn *c);
static void deflate_run(conn *c, const void *p, size_t len, int mode);
static void z_free(conn *c);
static void hard_close(conn *c);
static void update_reading(conn *c);
static void arm_timer(conn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* What we send goes through deflate (COMPRESS on and not stopped). */
static bool deflating(const conn *c)
{
	return c->z && !c->z->stopping;
}

/* ------------------------------------------------- per-address counts */

struct addr_entry {
	struct addr_entry *next;
	unsigned char ip[16];
	unsigned count;
};

/* srv->per_addr: a chained hash table with a random seed, so that clients
 * cannot choose addresses that collide.  Freed when empty. */
struct addr_count {
	size_t nbuckets, n;
	uint64_t seed;
	struct addr_entry **b;
};

static size_t addr_hash(const struct addr_count *t, const unsigned char ip[16])
{
	uint64_t a, b;
	memcpy(&a, ip, 8);
	memcpy(&b, ip + 8, 8);
	uint64_t h = t->seed ^ (a * 0x9e3779b97f4a7c15ULL);
	h = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ULL;
	h ^= b;
	h = (h ^ (h >> 32)) * 0x94d049bb133111ebULL;
	h ^= h >> 31;
	return (size_t)(h & (t->nbuckets - 1));
}

static void addr_grow(struct addr_count *t)
{
	size_t nb = t->nbuckets * 2;
	struct addr_entry **b = calloc(nb, sizeof *b);
	if (!b)
		return; /* longer chains, still correct */
	struct addr_entry **old = t->b;
	size_t oldn = t->nbuckets;
	t->b = b;
	t->nbuckets = nb;
	for (size_t i = 0; i < oldn; i++) {
		struct addr_entry *e = old[i], *next;
		for (; e; e = next) {
			next = e->next;
			size_t h = addr_hash(t, e->ip);
			e->next = b[h];
			b[h] = e;
		}
	}
	free(old);
}

/* Count one more connection from IP; returns the new count, 0 on ENOMEM. */
static unsigned addr_inc(struct server *srv, const unsigned char ip[16])
{
	struct addr_count *t = srv->per_addr;
	if (!t) {
		t = calloc(1, sizeof *t);
		if (!t)
			return 0;
		t->nbuckets = 64;
		t->b = calloc(t->nbuckets, sizeof *t->b);
		if (!t->b) {
			free(t);
			return 0;
		}
		if (getrandom(&t->seed, sizeof t->seed, GRND_NONBLOCK) != sizeof t->seed)
			t->seed = (uint64_t)(uintptr_t)t ^ uv_hrtime();
		srv->per_addr = t;
	}
	size_t h = addr_hash(t, ip);
	for (struct addr_entry *e = t->b[h]; e; e = e->next)
		if (!memcmp(e->ip, ip, 16))
			return ++e->count;
	struct addr_entry *e = calloc(1, sizeof *e);
	if (!e)
		return 0;
	memcpy(e->ip, ip, 16);
	e->count = 1;
	e->next = t->b[h];
	t->b[h] = e;
	if (++t->n > t->nbuckets)
		addr_grow(t);
	return 1;
}

static void addr_dec(struct server *srv, const unsigned char ip[16])
{
	struct addr_count *t = srv->per_addr;
	if (!t)
		return;
	struct addr_entry **pe = &t->b[addr_hash(t, ip)];
	for (; *pe; pe = &(*pe)->next) {
		struct addr_entry *e = *pe;
		if (memcmp(e->ip, ip, 16))
			continue;
		if (--e->count == 0) {
			*pe = e->next;
			free(e);
			t->n--;
		}
		break;
	}
	if (t->n == 0) {
		free(t->b);
		free(t);
		srv->per_addr = NULL;
	}
}

/* ------------------------------------------------------------ helpers */

static uint64_t now_ms(const conn *c)
{
	return uv_now(c->srv->loop);
}

static size_t max_output(const conn *c)
{
	size_t m = c->srv->cfg->limits.max_output;
	return m ? m : 1024 * 1024;
}

static size_t max_line(const conn *c)
{
	size_t m = c->srv->cfg->limits.max_line;
	return m ? m : 8192;
}

/* Ask for process_input and/or a flush once the current callbacks return.
 * An idle handle (not a check handle) so that the loop does not block in
 * poll first. */
static void on_defer(uv_idle_t *h);

static void schedule(conn *c, bool process)
{
	if (c->state >= CONN_CLOSING)
		return;
	if (process)
		c->process_pending = true;
	if (!uv_is_active((uv_handle_t *)&c->defer))
		uv_idle_start(&c->defer, on_defer);
}

static void on_defer(uv_idle_t *h)
{
	conn *c = h->data;
	uv_idle_stop(h);
	if (c->process_pending) {
		c->process_pending = false;
		process_input(c);
	}
	update_reading(c);
	flush(c);
}

/* ------------------------------------------------------------- output */

static void free_chunks(struct out_chunk *ch)
{
	while (ch) {
		struct out_chunk *next = ch->next;
		free(ch);
		ch = next;
	}
}

/* Append bytes to the queue as they go on the wire (ciphertext under TLS). */
static void out_append(conn *c, const void *p, size_t len)
{
	if (c->state >= CONN_CLOSING || len == 0)
		return;
	size_t limit = max_output(c);
	/* The safety net: a front-end that ignores conn_congested, or a
	 * client that never reads, must not grow memory without bound. */
	if (c->queued + len > 8 * limit) {
		conn_log(c, LOGL_WARN, "output queue over %zu bytes; closing", 8 * limit);
		hard_close(c);
		return;
	}
	if (c->queued == 0)
		c->last_output = now_ms(c);
	const char *q = p;
	c->queued += len;
	while (len > 0) {
		struct out_chunk *t = c->out_tail;
		if (!t || t->inflight || t->len == t->cap) {
			size_t cap = len > OUT_CHUNK ? (len < OUT_CHUNK_MAX ? len : OUT_CHUNK_MAX)
			                             : OUT_CHUNK;
			t = malloc(sizeof *t + cap);
			if (!t) {
				c->queued -= len;
				conn_log(c, LOGL_ERR, "out of memory for output; closing");
				hard_close(c);
				return;
			}
			t->next = NULL;
			t->off = 0;
			t->len = 0;
			t->cap = cap;
			t->inflight = false;
			if (c->out_tail)
				c->out_tail->next = t;
			else
				c->out_head = t;
			c->out_tail = t;
		}
		size_t n = t->cap - t->len < len ? t->cap - t->len : len;
		memcpy(t->data + t->len, q, n);
		t->len += n;
		q += n;
		len -= n;
	}
	if (c->queued > limit && !c->congested) {
		c->congested = true;
		update_reading(c);
	}
	if (!c->writing)
		schedule(c, false);
}

static void on_write(uv_write_t *req, int status);

/* DONE octets from the head of the queue are in the kernel's hands (a
 * uv_try_write, never one with a uv_write in flight): drop them. */
static void output_done(conn *c, size_t done)
{
	size_t left = done;
	while (left > 0 && c->out_head) {
		struct out_chunk *ch = c->out_head;
		if (ch->len - ch->off > left) {
			ch->off += left;
			break;
		}
		left -= ch->len - ch->off;
		c->out_head = ch->next;
		free(ch);
	}
	if (!c->out_head)
		c->out_tail = NULL;
	c->queued -= done;
	c->bytes_out += done;
	c->last_output = now_ms(c);
}

/* Hand the queued chunks to the kernel: first straight away with
 * uv_try_write, then what the socket did not take with one uv_write at a
 * time, with every chunk queued so far (bounded), so small writes become
 * few syscalls. */
static void flush(conn *c)
{
	/* Under COMPRESS, what was deflated since the last flush goes out now,
	 * so that every response reaches the client without waiting for
	 * more (RFC 4978 section 4 leaves the flushing to us). */
	if (deflating(c) && c->z->def_pending && c->state == CONN_OPEN && !c->writing)
		deflate_run(c, NULL, 0, Z_SYNC_FLUSH);
	if (c->writing || !c->out_head || c->state >= CONN_CLOSING)
		return;
	uv_buf_t bufs[WRITE_MAX_BUFS];
	unsigned n = 0;
	size_t bytes = 0;
	for (struct out_chunk *ch = c->out_head; ch && n < WRITE_MAX_BUFS; ch = ch->next) {
		bufs[n++] = uv_buf_init(ch->data + ch->off, (unsigned)(ch->len - ch->off));
		bytes += ch->len - ch->off;
	}
	if (c->state == CONN_OPEN && !c->congested) {
		/* Most answers fit the socket buffer: write them now.  This
		 * skips uv_write's completion round, whose bookkeeping costs
		 * an epoll_ctl per write in libuv, which is a third of an IDLE
		 * fan-out to thousands of connections (docs/benchmarks.md).
		 * What is left over goes through uv_write below. */
		int w = uv_try_write(c->stream, bufs, n);
		if (w < 0 && w != UV_EAGAIN) {
			conn_log(c, LOGL_DEBUG, "write: %s", uv_strerror(w));
			c->eof = true;
			hard_close(c);
			return;
		}
		if (w > 0) {
			output_done(c, (size_t)w);
			if (!c->out_head)
				return;
			n = 0;
			bytes = 0;
			for (struct out_chunk *ch = c->out_head; ch && n < WRITE_MAX_BUFS;
			     ch = ch->next) {
				bufs[n++] = uv_buf_init(ch->data + ch->off,
				                        (unsigned)(ch->len - ch->off));
				bytes += ch->len - ch->off;
			}
		}
	}
	unsigned k = 0;
	for (struct out_chunk *ch = c->out_head; ch && k < n; ch = ch->next, k++)
		ch->inflight = true;
	int r = uv_write(&c->wreq, c->stream, bufs, n, on_write);
	if (r < 0) {
		for (struct out_chunk *ch = c->out_head; ch; ch = ch->next)
			ch->inflight = false;
		conn_log(c, LOGL_DEBUG, "write: %s", uv_strerror(r));
		c->eof = true;
		hard_close(c);
		return;
	}
	c->writing = true;
	c->inflight = bytes;
}

static void start_shutdown(conn *c);

static void on_write(uv_write_t *req, int status)
{
	conn *c = req->data;
	c->writing = false;
	while (c->out_head && c->out_head->inflight) {
		struct out_chunk *ch = c->out_head;
		c->out_head = ch->next;
		free(ch);
	}
	if (!c->out_head)
		c->out_tail = NULL;
	c->queued -= c->inflight;
	size_t done = c->inflight;
	c->inflight = 0;
	if (c->state >= CONN_CLOSING)
		return;
	if (status < 0) {
		conn_log(c, LOGL_DEBUG, "write: %s", uv_strerror(status));
		c->eof = true;
		hard_close(c);
		return;
	}
	c->bytes_out += done;
	c->last_output = now_ms(c);
	if (c->state == CONN_FLUSHING && !c->out_head) {
		start_shutdown(c);
		return;
	}
	if (c->congested && c->queued <= max_output(c) / 4) {
		c->congested = false;
		update_reading(c);
		schedule(c, true); /* input delivery stopped while congested */
		if (c->state == CONN_OPEN && c->sess && c->ops->drained)
			c->ops->drained(c->sess);
	}
	flush(c);
}

/* ------------------------------------------------------------- timers */

/* When the timer must next look: the earliest moment something could
 * expire.  Input and output progress are recorded lazily (a timestamp),
 * so the timer may fire early; on_timer then re-arms. */
static uint64_t deadline(const conn *c)
{
	uint64_t never = UINT64_MAX;
	switch (c->state) {
	case CONN_HANDSHAKE:
		/* RFC 8314 section 5.1 style: a handshake gets the pre-login
		 * time, whatever the front-end chose. */
		return c->phase_start + (uint64_t)conn_preauth_timeout(c) * 1000;
	case CONN_OPEN: {
		uint64_t d = never;
		if (c->timeout_ms) {
			d = c->last_input + c->timeout_ms;
			if (c->queued > 0 && c->last_output + c->timeout_ms < d)
				d = c->last_output + c->timeout_ms;
		}
		if (c->throttled && c->throttle_until < d)
			d = c->throttle_until;
		return d;
	}
	case CONN_FLUSHING:
		return c->last_output + (c->srv->stopping ? STOP_LINGER_MS : CLOSE_LINGER_MS);
	case CONN_SHUTDOWN:
		return c->phase_start + SHUTDOWN_LINGER_MS;
	default:
		return never;
	}
}

static void on_timer(uv_timer_t *t);

static void arm_timer(conn *c)
{
	if (c->state >= CONN_CLOSING)
		return;
	uint64_t d = deadline(c), now = now_ms(c);
	if (d == UINT64_MAX) {
		uv_timer_stop(&c->timer);
		return;
	}
	uv_timer_start(&c->timer, on_timer, d > now ? d - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
	conn *c = t->data;
	uint64_t now = now_ms(c);
	if (now < deadline(c)) {
		arm_timer(c);
		return;
	}
	switch (c->state) {
	case CONN_HANDSHAKE:
		conn_log(c, LOGL_INFO, "TLS handshake timed out");
		hard_close(c);
		break;
	case CONN_OPEN:
		if (c->throttled && now >= c->throttle_until) {
			/* The bucket has a command again; an idle deadline
			 * that passed meanwhile is seen when the timer next
			 * fires, at once. */
			c->throttled = false;
			schedule(c, true);
			arm_timer(c);
			break;
		}
		if (c->queued > 0 && now >= c->last_output + c->timeout_ms) {
			conn_log(c, LOGL_INFO, "output stalled for %" PRIu64 " s; closing",
			         c->timeout_ms / 1000);
			hard_close(c);
			break;
		}
		conn_log(c, LOGL_INFO, "idle timeout");
		if (c->sess && c->ops->timeout)
			c->ops->timeout(c->sess);
		conn_close(c);
		flush(c);
		break;
	case CONN_FLUSHING:
		conn_log(c, LOGL_DEBUG, "output did not drain; closing");
		hard_close(c);
		break;
	case CONN_SHUTDOWN:
		hard_close(c);
		break;
	default:
		break;
	}
}

/* -------------------------------------------------------------- input */

/* Make room for at least MIN more bytes of plaintext input. */
static bool in_reserve(conn *c, size_t min)
{
	if (c->in_cap - c->in_len >= min)
		return true;
	if (c->in_off > 0) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
		if (c->in_cap - c->in_len >= min)
			return true;
	}
	size_t cap = c->in_len + (min > IN_GROW ? min : IN_GROW);
	char *p = realloc(c->in, cap);
	if (!p)
		return false;
	c->in = p;
	c->in_cap = cap;
	return true;
}

/* Drop the buffer of an idle connection: most connections wait most of
 * the time, and should cost little while they do. */
static void in_trim(conn *c)
{
	if (c->in_off == c->in_len) {
		free(c->in);
		c->in = NULL;
		c->in_off = c->in_len = c->in_cap = 0;
	}
}

static size_t in_buffered(const conn *c)
{
	return c->in_len - c->in_off;
}

/* ------------------------------------------------- compressed input */

static size_t zin_buffered(const conn *c)
{
	return c->z ? c->z->in_len - c->z->in_off : 0;
}

static bool zin_full(const conn *c)
{
	return c->z && c->z->in && zin_buffered(c) >= c->z->in_cap;
}

/* Where the next compressed bytes go (from the socket, or decrypted):
 * sets *ROOM, 0 when the buffer is full.  NULL when out of memory. */
static char *zin_room(conn *c, size_t *room)
{
	struct conn_z *z = c->z;
	*room = 0;
	if (!z->in) {
		z->in = malloc(ZIN_CAP);
		if (!z->in)
			return NULL;
		z->in_cap = ZIN_CAP;
		z->in_off = z->in_len = 0;
	}
	if (z->in_off > 0) {
		memmove(z->in, z->in + z->in_off, z->in_len - z->in_off);
		z->in_len -= z->in_off;
		z->in_off = 0;
	}
	*room = z->in_cap - z->in_len;
	return z->in + z->in_len;
}

/*
 * The client's deflate stream ended after conn_compress_stop: what it sent
 * after the stream's last byte is clear input, so it joins the plaintext
 * (behind whatever was inflated and not yet consumed), and the layer goes.
 * The plaintext may then exceed in_limit by at most ZIN_CAP once.  Returns
 * false if the connection failed.
 */
static bool zin_handover(conn *c)
{
	struct conn_z *z = c->z;
	size_t rest = zin_buffered(c);
	if (rest > 0) {
		if (!in_reserve(c, rest)) {
			conn_log(c, LOGL_ERR, "out of memory for input; closing");
			hard_close(c);
			return false;
		}
		memcpy(c->in + c->in_len, z->in + z->in_off, rest);
		c->in_len += rest;
	}
	conn_log(c, LOGL_DEBUG, "COMPRESS ended (%zu clear octets already read)", rest);
	z_free(c);
	return true;
}

/*
 * Inflate buffered compressed input into the plaintext buffer, never past
 * in_limit: a small packet that inflates to megabytes (a "deflate bomb")
 * is cut into in_limit pieces, which meet the line limit like any clear
 * input, so memory does not grow with the ratio.  Inflation stops at the
 * end of the client's stream; the bytes behind it wait in z->in, for
 * zin_handover if we stopped compression, or for process_input to call
 * the connection's input over.  Returns false if the connection failed (a
 * broken stream closes it).
 */
static bool inflate_pump(conn *c)
{
	struct conn_z *z = c->z;
	while (!z->inf_end && zin_buffered(c) > 0 && in_buffered(c) < c->in_limit) {
		size_t want = c->in_limit - in_buffered(c);
		if (!in_reserve(c, want < 4096 ? want : 4096)) {
			conn_log(c, LOGL_ERR, "out of memory for input; closing");
			hard_close(c);
			return false;
		}
		size_t room = c->in_cap - c->in_len, avail = zin_buffered(c);
		if (room > want)
			room = want;
		z->inf.next_in = (const Bytef *)(z->in + z->in_off);
		z->inf.avail_in = avail > UINT_MAX ? UINT_MAX : (uInt)avail;
		z->inf.next_out = (Bytef *)(c->in + c->in_len);
		z->inf.avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
		uInt in0 = z->inf.avail_in, out0 = z->inf.avail_out;
		int r = inflate(&z->inf, Z_SYNC_FLUSH);
		z->in_off += in0 - z->inf.avail_in;
		c->in_len += out0 - z->inf.avail_out;
		if (r == Z_STREAM_END) {
			/* A final block.  zlib stops right after its last
			 * byte, so z->in now holds what came after it. */
			z->inf_end = true;
			break;
		}
		if (r == Z_OK)
			continue; /* progress was made: each round consumes or fills */
		if (r == Z_BUF_ERROR)
			break;    /* nothing could move */
		conn_log(c, LOGL_INFO, "compressed input is broken (%s); closing",
		         z->inf.msg ? z->inf.msg : zError(r));
		c->eof = true;
		hard_close(c);
		return false;
	}
	if (z->inf_end && z->stopping)
		return zin_handover(c);
	if (z->in && zin_buffered(c) == 0) {
		free(z->in); /* an idle connection keeps no buffer */
		z->in = NULL;
		z->in_off = z->in_len = z->in_cap = 0;
	}
	return true;
}

/* The client ended its deflate stream without our conn_compress_stop, and
 * every line it sent before that end has been handled: that is its end of
 * input (nothing it sends afterwards could be read as compressed data). */
static void zin_end_of_input(conn *c)
{
	struct conn_z *z = c->z;
	conn_log(c, LOGL_DEBUG, "the client ended its compressed stream");
	c->eof = true;
	free(z->in);
	z->in = NULL;
	z->in_off = z->in_len = z->in_cap = 0;
}

/* Read the socket only when there is somewhere to put the bytes and
 * someone to take them: this is the backpressure on a client that sends
 * faster than we answer or that does not read our answers. */
static void update_reading(conn *c)
{
	bool want = false;
	switch (c->state) {
	case CONN_HANDSHAKE:
	case CONN_OPEN:
		want = !c->eof && !c->congested && in_buffered(c) < c->in_limit;
		/* After the end of the client's deflate stream: read on
		 * only once zin_handover made the rest clear input. */
		if (want && c->z && c->z->inf_end)
			want = false;
		if (want && c->tls)
			want = !tls_sess_in_full(c->tls);
		else if (want && c->z)
			want = !zin_full(c);
		break;
	case CONN_SHUTDOWN:
		want = !c->eof;
		break;
	default:
		break;
	}
	if (want == c->reading)
		return;
	c->reading = want;
	if (!want) {
		uv_read_stop(c->stream);
		return;
	}
	int r = uv_read_start(c->stream, on_alloc, on_read);
	if (r < 0) {
		c->reading = false;
		conn_log(c, LOGL_DEBUG, "read: %s", uv_strerror(r));
		c->eof = true;
		hard_close(c);
	}
}

/* Decrypt what TLS has buffered into the plaintext input (or, under
 * COMPRESS, into the compressed input), up to the bound.  Returns false if
 * the connection failed. */
static bool tls_pump(conn *c)
{
	for (;;) {
		char *dst;
		size_t room;
		if (c->z) {
			dst = zin_room(c, &room);
		} else {
			if (in_buffered(c) >= c->in_limit)
				break;
			dst = in_reserve(c, 4096) ? c->in + c->in_len : NULL;
			room = dst ? c->in_cap - c->in_len : 0;
		}
		if (!dst) {
			conn_log(c, LOGL_ERR, "out of memory for input; closing");
			hard_close(c);
			return false;
		}
		if (room == 0)
			break;
		const char *why = NULL;
		ssize_t r = tls_sess_recv(c->tls, dst, room, &why);
		if (r > 0) {
			/* Each round adds bytes to a bounded buffer. */
			if (c->z)
				c->z->in_len += (size_t)r;
			else
				c->in_len += (size_t)r;
			continue;
		}
		if (r == TLS_RECV_EOF)
			c->eof = true;
		if (r == TLS_RECV_ERR) {
			conn_log(c, LOGL_INFO, "TLS error: %s", why ? why : "unknown");
			c->eof = true;
			hard_close(c);
			return false;
		}
		break;
	}
	return true;
}

/*
 * Bring into the plaintext buffer what needs no socket read: decrypt, then
 * inflate.  Under both, TLS fills the compressed buffer and inflate empties
 * it, so go round until the plaintext is full or TLS has nothing more; each
 * round takes fresh bytes from TLS's bounded buffer.  False if the
 * connection failed.
 */
static bool in_pump(conn *c)
{
	for (;;) {
		if (!c->z)
			return c->tls ? tls_pump(c) : true;
		size_t before = zin_buffered(c);
		if (c->tls && !tls_pump(c))
			return false;
		bool fresh = zin_buffered(c) > before;
		if (!inflate_pump(c))
			return false;
		/* No layer left (conn_compress_stop's end): clear input
		 * may wait in TLS, so go round once more. */
		if (!c->z)
			continue;
		if (!c->tls || !fresh || in_buffered(c) >= c->in_limit)
			return true;
	}
}

/* ---------------------------------------------- commands before login */

/* A protocol without a login (LMTP: trusted MTAs that pipeline whole
 * transactions, proto_ops.no_login) is never metered. */
static bool rate_limited(const conn *c)
{
	return !c->authed && !c->ops->no_login && c->srv->cfg->limits.preauth_command_rate > 0;
}

/* Take one command from the bucket.  When it is empty, stop processing
 * input (it stays buffered, and the socket is read only up to in_limit)
 * until the timer says a command is due, and return false. */
static bool rate_take(conn *c)
{
	if (!rate_limited(c))
		return true;
	const struct cfg_limits *lim = &c->srv->cfg->limits;
	uint64_t rate = lim->preauth_command_rate; /* thousandths per ms */
	uint64_t cap = (uint64_t)lim->preauth_command_burst * 1000;
	uint64_t now = now_ms(c);
	uint64_t elapsed = now > c->refill_at ? now - c->refill_at : 0;
	c->refill_at = now;
	c->tokens += elapsed * rate; /* uptime in ms times 10^6 fits */
	if (c->tokens > cap)
		c->tokens = cap;
	if (c->tokens >= 1000) {
		c->tokens -= 1000;
		return true;
	}
	if (!c->throttle_logged) {
		conn_log(c, LOGL_INFO, "over %" PRIu64 " commands a second before login; "
		         "slowing its input down", rate);
		c->throttle_logged = true;
	}
	c->throttled = true;
	c->throttle_until = now + (1000 - c->tokens + rate - 1) / rate;
	arm_timer(c);
	return false;
}

/*
 * Hand buffered input to the front-end for as long as it takes it.  Every
 * callback may switch modes, pause, start TLS or close; the loop re-checks
 * all of that before the next byte.  Never re-entered: conn_resume and the
 * drain path schedule it instead.
 */
static void process_input(conn *c)
{
	if (c->processing)
		return;
	c->processing = true;
	bool starved = false; /* stopped for want of input, not by choice */
	size_t limit = max_line(c);
	while (c->state == CONN_OPEN && !c->paused && !c->congested && !c->throttled) {
		if (!in_pump(c))
			break;
		size_t avail = in_buffered(c);
		/* Under TLS or COMPRESS, a full buffer may leave input behind
		 * that needs no socket read. */
		bool more = (c->tls || c->z) && avail >= c->in_limit;
		char *p = c->in ? c->in + c->in_off : NULL;
		if (c->bytes_mode) {
			if (avail == 0) {
				starved = true;
				break;
			}
			unsigned epoch = c->in_epoch;
			size_t used = c->ops->bytes(c->sess, p, avail);
			if (epoch != c->in_epoch)
				continue; /* input was discarded under us */
			if (used > avail)
				used = avail;
			c->in_off += used;
			if (used == 0 && c->bytes_mode) {
				starved = true;
				break;
			}
			continue;
		}
		char *lf = avail ? memchr(p, '\n', avail) : NULL;
		if (c->discarding) {
			if (!lf) {
				c->in_off = c->in_len;
				if (more)
					continue;
				starved = true;
				break;
			}
			if (!rate_take(c))
				break;
			c->in_off += (size_t)(lf - p) + 1;
			c->discarding = false;
			if (c->ops->line_too_long)
				c->ops->line_too_long(c->sess);
			continue;
		}
		if (!lf) {
			/* An unfinished line over the limit (one byte of slack
			 * for its CR): drop it as it comes, never buffer it. */
			if (avail > limit + 1) {
				c->discarding = true;
				c->in_off = c->in_len;
				continue;
			}
			starved = true;
			break;
		}
		if (!rate_take(c))
			break;
		size_t n = (size_t)(lf - p), len = n;
		if (len > 0 && p[len - 1] == '\r')
			len--;
		c->in_off += n + 1; /* consumed before the callback: see conn_starttls */
		if (len > limit) {
			if (c->ops->line_too_long)
				c->ops->line_too_long(c->sess);
			continue;
		}
		p[len] = '\0';
		c->ops->line(c->sess, p, len);
	}
	c->processing = false;
	if (c->state >= CONN_CLOSING)
		return;
	in_trim(c);
	if (starved && c->z && c->z->inf_end && !c->z->stopping)
		zin_end_of_input(c);
	/* The peer sent its last byte (e.g. a pipelined QUIT, then EOF) and
	 * everything it sent has been handled: close. */
	if (starved && c->eof && c->state == CONN_OPEN)
		conn_close(c);
}

static char shutdown_sink[4096]; /* input read after our FIN is dropped */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	conn *c = h->data;
	(void)suggested;
	*buf = uv_buf_init(NULL, 0);
	if (c->state == CONN_SHUTDOWN) {
		*buf = uv_buf_init(shutdown_sink, sizeof shutdown_sink);
		return;
	}
	if (c->tls) {
		size_t room;
		char *p = tls_sess_inbuf(c->tls, &room);
		if (p && room > 0)
			*buf = uv_buf_init(p, (unsigned)room);
		return;
	}
	if (c->z) {
		size_t room;
		char *p = zin_room(c, &room);
		if (p && room > 0)
			*buf = uv_buf_init(p, (unsigned)room);
		return;
	}
	/* A message body (LMTP DATA, an APPEND literal) comes in large
	 * reads: a quarter of the system calls for a big message.  The
	 * front-end takes the bytes as they come, and update_reading still
	 * stops reading past in_limit, so this bounds memory as before. */
	if (in_reserve(c, c->bytes_mode ? IN_BYTES_READ : 4096))
		*buf = uv_buf_init(c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void run_handshake(conn *c);

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	conn *c = s->data;
	(void)buf;
	if (c->state == CONN_SHUTDOWN) {
		if (nread < 0) {
			c->eof = true;
			hard_close(c);
		}
		return;
	}
	if (c->state >= CONN_FLUSHING || nread == 0)
		return;
	if (nread == UV_ENOBUFS) {
		/* The buffer is full: stop until it drains. */
		c->reading = false;
		uv_read_stop(c->stream);
		return;
	}
	if (nread < 0) {
		if (nread != UV_EOF) {
			conn_log(c, LOGL_DEBUG, "read: %s", uv_strerror((int)nread));
			c->eof = true;
			hard_close(c);
			return;
		}
		c->eof = true;
		if (c->tls)
			tls_sess_set_eof(c->tls);
	} else {
		c->bytes_in += (uint64_t)nread;
		c->last_input = now_ms(c);
		if (c->tls)
			tls_sess_received(c->tls, (size_t)nread);
		else if (c->z)
			c->z->in_len += (size_t)nread;
		else
			c->in_len += (size_t)nread;
	}
	if (c->state == CONN_HANDSHAKE)
		run_handshake(c);
	if (c->state == CONN_OPEN)
		process_input(c);
	update_reading(c);
	flush(c);
}

/* ------------------------------------------------------------- TLS */

static void tls_push(void *arg, const void *p, size_t len)
{
	out_append(arg, p, len);
}

static void call_open(conn *c)
{
	c->sess = c->ops->open(c);
	if (!c->sess && c->state == CONN_OPEN) {
		conn_log(c, LOGL_ERR, "could not start a %s session", c->ops->name);
		conn_close(c);
	}
}

static void run_handshake(conn *c)
{
	const char *why = NULL;
	int r = tls_sess_handshake(c->tls, &why);
	if (r == 0)
		return;
	if (r < 0) {
		conn_log(c, LOGL_INFO, "TLS handshake failed: %s", why ? why : "unknown");
		/* Send the alert GnuTLS queued, then close. */
		c->state = CONN_OPEN;
		conn_close(c);
		return;
	}
	char desc[96];
	tls_sess_describe(c->tls, desc, sizeof desc);
	conn_log(c, LOGL_DEBUG, "TLS established: %s", desc);
	c->tls_up = true;
	c->state = CONN_OPEN;
	c->last_input = now_ms(c);
	if (c->tls_hold) {
		char *hold = c->tls_hold;
		size_t len = c->tls_hold_len;
		c->tls_hold = NULL;
		c->tls_hold_len = 0;
		conn_write(c, hold, len);
		free(hold);
	}
	if (!c->sess)
		call_open(c); /* implicit TLS: the greeting goes out encrypted */
	arm_timer(c);
	/* Application data may have come with the handshake's last flight. */
	if (c->state == CONN_OPEN)
		process_input(c);
}

int conn_starttls(conn *c)
{
	/* RFC 4978 section 3 puts TLS below COMPRESS; an upgrade after
	 * COMPRESS would have to go under it.  No front-end allows it. */
	if (c->tls || c->z || !c->srv->tls || c->state != CONN_OPEN)
		return -1;
	c->tls = tls_sess_new(c->srv->tls, tls_push, c);
	if (!c->tls) {
		conn_log(c, LOGL_ERR, "cannot start a TLS session");
		return -1;
	}
	/* The STARTTLS injection defence (RFC 2595 section 3.1, RFC 3501
	 * section 6.2.1, RFC 3207 section 4.2): whatever the client sent after
	 * the command, in clear, is thrown away and never executed after the
	 * upgrade.  The command's line was consumed before its callback ran,
	 * so this drops exactly the bytes after it.  Bytes still in the
	 * socket are read as TLS from now on, and fail the handshake. */
	c->in_off = c->in_len;
	c->in_epoch++;
	c->discarding = false;
	c->state = CONN_HANDSHAKE;
	c->phase_start = now_ms(c);
	arm_timer(c);
	update_reading(c);
	return 0;
}

bool conn_is_tls(const conn *c)
{
	return c->tls_up;
}

bool conn_tls_available(const conn *c)
{
	return c->srv->tls != NULL;
}

/* ---------------------------------------------------------- lifecycle */

/* The connection stops counting against max_connections and
 * max_per_address once its session is over (our FIN is sent, or the socket
 * is closed), not when its memory is freed: a lingering close or a slow
 * conn_release must not keep a client's next connection out. */
static void release_slot(conn *c)
{
	if (!c->counted)
		return;
	c->counted = false;
	c->srv->nconns--;
	if (c->addr_counted)
		addr_dec(c->srv, c->addr);
	c->addr_counted = false;
}

static void finish(conn *c)
{
	if (c->state != CONN_CLOSED || c->holds > 0 || c->finished)
		return;
	c->finished = true;
	if (c->sess && c->ops->close)
		c->ops->close(c->sess);
	c->sess = NULL;
	*c->pprev = c->next;
	if (c->next)
		c->next->pprev = c->pprev;
	release_slot(c);
	tls_sess_free(c->tls);
	z_free(c);
	free(c->tls_hold);
	free_chunks(c->out_head);
	free(c->in);
	free(c->user);
	free(c->stream);
	free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
	conn *c = h->data;
	if (--c->handles_open > 0)
		return;
	c->state = CONN_CLOSED;
	finish(c);
}

/* Close the socket now, dropping whatever is still queued. */
static void hard_close(conn *c)
{
	if (c->state >= CONN_CLOSING)
		return;
	double secs = (double)(now_ms(c) - c->started) / 1000.0;
	conn_log(c, LOGL_INFO, "disconnect after %.3f s, in %" PRIu64 " out %" PRIu64 " bytes",
	         secs, c->bytes_in, c->bytes_out);
	c->state = CONN_CLOSING;
	c->reading = false;
	release_slot(c);
	uv_close((uv_handle_t *)c->stream, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->defer, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	conn *c = req->data;
	if (c->state != CONN_SHUTDOWN)
		return;
	if (status < 0) {
		hard_close(c);
		return;
	}
	update_reading(c);
}

/* Everything is sent: send our FIN, then linger briefly reading. */
static void start_shutdown(conn *c)
{
	if (c->eof) {
		hard_close(c);
		return;
	}
	c->state = CONN_SHUTDOWN;
	c->phase_start = now_ms(c);
	release_slot(c);
	c->sreq.data = c;
	if (uv_shutdown(&c->sreq, c->stream, on_shutdown) < 0) {
		hard_close(c);
		return;
	}
	arm_timer(c);
}

void conn_close(conn *c)
{
	if (c->state >= CONN_FLUSHING)
		return;
	/* The last words (a BYE) must reach the client whole. */
	if (c->state == CONN_OPEN && deflating(c) && c->z->def_pending) {
		deflate_run(c, NULL, 0, Z_SYNC_FLUSH);
		if (c->state >= CONN_FLUSHING)
			return;
	}
	if (c->state == CONN_OPEN && c->tls_up)
		tls_sess_bye(c->tls); /* close_notify, RFC 8446 section 6.1 */
	c->state = CONN_FLUSHING;
	update_reading(c);
	if (c->state != CONN_FLUSHING)
		return;
	if (!c->writing && !c->out_head) {
		start_shutdown(c);
		return;
	}
	c->last_output = now_ms(c);
	arm_timer(c);
	schedule(c, false);
}

bool conn_closed(const conn *c)
{
	return c->state >= CONN_FLUSHING;
}

void conn_hold(conn *c)
{
	c->holds++;
}

void conn_release(conn *c)
{
	if (c->holds == 0) {
		conn_log(c, LOGL_ERR, "conn_release without conn_hold");
		return;
	}
	c->holds--;
	finish(c);
}

void conn_close_all(struct server *srv)
{
	for (conn *c = srv->conns; c; c = c->next) {
		conn_close(c);
		flush(c);
	}
}

/* Format the peer's address and note its IP for the per-address count. */
static bool peer_address(conn *c)
{
	if (c->stream->type != UV_TCP) {
		snprintf(c->peer, sizeof c->peer, "unix");
		return false;
	}
	struct sockaddr_storage ss;
	int len = sizeof ss;
	if (uv_tcp_getpeername((uv_tcp_t *)c->stream, (struct sockaddr *)&ss, &len) < 0) {
		snprintf(c->peer, sizeof c->peer, "unknown");
		return false;
	}
	char ip[INET6_ADDRSTRLEN];
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in sin;
		memcpy(&sin, &ss, sizeof sin);
		uv_ip4_name(&sin, ip, sizeof ip);
		snprintf(c->peer, sizeof c->peer, "%s:%u", ip, ntohs(sin.sin_port));
		memset(c->addr, 0, 10);
		c->addr[10] = c->addr[11] = 0xff;
		memcpy(c->addr + 12, &sin.sin_addr, 4);
		return true;
	}
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 sin6;
		memcpy(&sin6, &ss, sizeof sin6);
		uv_ip6_name(&sin6, ip, sizeof ip);
		snprintf(c->peer, sizeof c->peer, "[%s]:%u", ip, ntohs(sin6.sin6_port));
		memcpy(c->addr, &sin6.sin6_addr, 16);
		return true;
	}
	snprintf(c->peer, sizeof c->peer, "unknown");
	return false;
}

static void free_handle(uv_handle_t *h)
{
	free(h);
}

/* CLIENT is a malloc'd, accepted uv_tcp_t or uv_pipe_t (listener.c makes
 * it); from here on the conn owns it, closes it and frees it. */
void conn_accept(struct server *srv, uv_stream_t *client, const struct proto_ops *ops,
                 bool implicit_tls)
{
	conn *c = calloc(1, sizeof *c);
	if (!c) {
		log_msg(LOGL_ERR, "out of memory accepting a %s connection", ops->name);
		uv_close((uv_handle_t *)client, free_handle);
		return;
	}
	c->srv = srv;
	c->ops = ops;
	c->stream = client;
	c->id = srv->next_session_id++;
	c->state = implicit_tls ? CONN_HANDSHAKE : CONN_OPEN;
	c->started = c->last_input = c->last_output = c->phase_start = now_ms(c);
	c->timeout_ms = (uint64_t)conn_preauth_timeout(c) * 1000;
	c->tokens = (uint64_t)srv->cfg->limits.preauth_command_burst * 1000;
	c->refill_at = c->started;
	size_t ml = max_line(c);
	c->in_limit = 2 * ml > IN_MIN_LIMIT ? 2 * ml : IN_MIN_LIMIT;
	client->data = c;
	uv_timer_init(srv->loop, &c->timer);
	uv_idle_init(srv->loop, &c->defer);
	c->timer.data = c->defer.data = c->wreq.data = c->sreq.data = c;
	c->handles_open = 3;

	c->next = srv->conns;
	if (srv->conns)
		srv->conns->pprev = &c->next;
	srv->conns = c;
	c->pprev = &srv->conns;
	srv->nconns++;
	c->counted = true;

	const struct cfg_limits *lim = &srv->cfg->limits;
	const char *refuse = NULL;
	unsigned per_addr = 0;
	if (peer_address(c)) {
		per_addr = addr_inc(srv, c->addr);
		c->addr_counted = per_addr > 0;
	}
	if (srv->stopping)
		refuse = "server stopping";
	else if (lim->max_connections && srv->nconns > lim->max_connections)
		refuse = "too many connections";
	else if (lim->max_per_address && per_addr > lim->max_per_address)
		refuse = "too many connections from this address";
	if (refuse) {
		conn_log(c, LOGL_INFO, "refused: %s", refuse);
		/* Under implicit TLS a cleartext refusal would be garbage to
		 * the client, and a handshake is what we cannot afford now. */
		if (!implicit_tls && ops->refuse_busy)
			out_append(c, ops->refuse_busy, strlen(ops->refuse_busy));
		c->state = CONN_OPEN;
		conn_close(c);
		flush(c);
		return;
	}
	conn_log(c, LOGL_INFO, "connect%s", implicit_tls ? " (TLS)" : "");
	if (client->type == UV_TCP) {
		uv_tcp_nodelay((uv_tcp_t *)client, 1);
		uv_tcp_keepalive((uv_tcp_t *)client, 1, 300);
	}
	if (implicit_tls) {
		c->tls = srv->tls ? tls_sess_new(srv->tls, tls_push, c) : NULL;
		if (!c->tls) {
			conn_log(c, LOGL_ERR, "cannot start a TLS session");
			hard_close(c);
			return;
		}
	} else {
		call_open(c);
	}
	update_reading(c);
	arm_timer(c);
	flush(c);
}

/* ------------------------------------------------- the wire, below */

/* What leaves the compression layer: encrypted if TLS is on, then queued. */
static void wire_write(conn *c, const void *p, size_t len)
{
	if (!c->tls) {
		out_append(c, p, len);
		return;
	}
	const char *why = NULL;
	if (tls_sess_send(c->tls, p, len, &why) < 0) {
		conn_log(c, LOGL_INFO, "TLS error: %s", why ? why : "unknown");
		hard_close(c);
	}
}

/*
 * Deflate LEN bytes at P with MODE (Z_NO_FLUSH; Z_SYNC_FLUSH to push out
 * everything so far on a byte boundary, RFC 1951 section 3.2.4's empty
 * stored block; or Z_FINISH to end the stream with a final block), handing
 * the output to the wire as it comes.  zlib keeps
 * what it holds back in its own bounded state, so output never needs more
 * than DEFLATE_CHUNK here.
 */
static void deflate_run(conn *c, const void *p, size_t len, int mode)
{
	struct conn_z *z = c->z;
	unsigned char out[DEFLATE_CHUNK];
	const unsigned char *q = p;
	/* Rounds needed: what zlib may hold from before (its window and
	 * pending buffer, well under 64 KiB at our settings), plus the input,
	 * plus stored-block overhead; each round emits a full chunk. */
	size_t max_rounds = (len + len / 64 + 64 * 1024) / sizeof out + 8;
	do {
		size_t take = len > (1u << 30) ? (1u << 30) : len;
		z->def.next_in = q;
		z->def.avail_in = (uInt)take;
		for (size_t round = 0;; round++) {
			if (round >= max_rounds) {
				conn_log(c, LOGL_ERR, "deflate did not finish; closing");
				hard_close(c);
				return;
			}
			z->def.next_out = out;
			z->def.avail_out = sizeof out;
			int r = deflate(&z->def, take == len ? mode : Z_NO_FLUSH);
			size_t n = sizeof out - z->def.avail_out;
			if (n > 0)
				wire_write(c, out, n);
			if (c->state >= CONN_CLOSING)
				return;
			if (r == Z_STREAM_ERROR) {
				conn_log(c, LOGL_ERR, "deflate failed; closing");
				hard_close(c);
				return;
			}
			/* Room left over: the input is taken and, for a
			 * flush, the flush is complete (zlib's contract);
			 * Z_STREAM_END says the final block is out. */
			if (r == Z_STREAM_END || z->def.avail_out > 0)
				break;
		}
		q += take;
		len -= take;
		if (take > 0)
			z->def_pending = true;
	} while (len > 0);
	if (mode != Z_NO_FLUSH)
		z->def_pending = false;
}

/* ------------------------------------------------- the front-end API */

store *conn_store(conn *c)
{
	return c->srv->store;
}

const struct proto_settings *conn_settings(conn *c)
{
	return &c->srv->cfg->proto;
}

const unsigned char *conn_addr(const conn *c)
{
	return strcmp(c->peer, "unix") == 0 || strcmp(c->peer, "unknown") == 0 ? NULL : c->addr;
}

unsigned *conn_auth_failures(conn *c)
{
	return &c->auth_failures;
}

struct server *conn_server(const conn *c)
{
	return c->srv;
}

void *conn_session(const conn *c)
{
	return c->sess;
}

void conn_write(conn *c, const void *p, size_t len)
{
	if (len == 0)
		return;
	if (c->state == CONN_HANDSHAKE) {
		/* Only after conn_starttls, from an asynchronous completion:
		 * keep it for the encrypted side.  Bounded like the queue. */
		if (!c->sess || c->tls_hold_len + len > 8 * max_output(c)) {
			conn_log(c, LOGL_WARN, "output during the TLS handshake; closing");
			hard_close(c);
			return;
		}
		char *h = realloc(c->tls_hold, c->tls_hold_len + len);
		if (!h) {
			hard_close(c);
			return;
		}
		memcpy(h + c->tls_hold_len, p, len);
		c->tls_hold = h;
		c->tls_hold_len += len;
		return;
	}
	if (c->state != CONN_OPEN)
		return; /* after conn_close: dropped */
	if (!deflating(c)) {
		wire_write(c, p, len);
		return;
	}
	/* Deflated now, flushed (Z_SYNC_FLUSH) when the layer next sends:
	 * a response written in many pieces still goes out in one flush. */
	deflate_run(c, p, len, Z_NO_FLUSH);
	if (c->state == CONN_OPEN && !c->writing)
		schedule(c, false);
}

/* ----------------------------------------------------------- COMPRESS */

int conn_compress_start(conn *c)
{
	if (c->z || c->state != CONN_OPEN)
		return -1;
	struct conn_z *z = calloc(1, sizeof *z);
	if (!z)
		goto oom;
	if (deflateInit2(&z->def, DEFLATE_LEVEL, Z_DEFLATED, -DEFLATE_WBITS, DEFLATE_MEMLEVEL,
	                 Z_DEFAULT_STRATEGY) != Z_OK) {
		free(z);
		goto oom;
	}
	if (inflateInit2(&z->inf, -INFLATE_WBITS) != Z_OK) {
		deflateEnd(&z->def);
		free(z);
		goto oom;
	}
	/* RFC 4978 section 3: the client compresses from the first command
	 * after COMPRESS, without waiting for our OK, so what it sent after
	 * the command line (already read, and decrypted under TLS) is
	 * compressed input.  The line itself was consumed before its
	 * callback ran. */
	size_t rest = in_buffered(c);
	if (rest > 0) {
		z->in_cap = rest > ZIN_CAP ? rest : ZIN_CAP;
		z->in = malloc(z->in_cap);
		if (!z->in) {
			deflateEnd(&z->def);
			inflateEnd(&z->inf);
			free(z);
			goto oom;
		}
		memcpy(z->in, c->in + c->in_off, rest);
		z->in_len = rest;
		c->in_len = c->in_off;
		c->in_epoch++;
	}
	c->z = z;
	conn_log(c, LOGL_DEBUG, "COMPRESS=DEFLATE active (%zu octets already read)", rest);
	schedule(c, true); /* inflate what came with the command */
	return 0;
oom:
	conn_log(c, LOGL_ERR, "out of memory starting compression");
	return -1;
}

/*
 * RFC 8437 section 4.1 (UNAUTHENTICATE): "the server terminates its
 * outgoing compression layer after it sends the CRLF following the OK
 * response.  The client terminates its outgoing compression layer after the
 * CRLF following the UNAUTHENTICATE command."  Terminating a DEFLATE
 * stream means a final block (RFC 1951 section 3.2.3, BFINAL), which is
 * what Z_FINISH writes.  Our side ends here; the client's ends when
 * inflate reaches its final block, which may already be buffered or may
 * come later (inflate_pump), and only then does the layer go.
 */
void conn_compress_stop(conn *c)
{
	struct conn_z *z = c->z;
	if (!z || z->stopping)
		return;
	if (c->state == CONN_OPEN)
		deflate_run(c, NULL, 0, Z_FINISH);
	if (c->state >= CONN_CLOSING || c->z != z)
		return;
	deflateEnd(&z->def);
	z->stopping = true;
	z->def_pending = false;
	conn_log(c, LOGL_DEBUG, "COMPRESS ending: our stream is ended; waiting for the end of the client's");
	/* Inflate on (or hand over what is buffered) before the next line. */
	schedule(c, true);
}

static void z_free(conn *c)
{
	struct conn_z *z = c->z;
	if (!z)
		return;
	if (!z->stopping)
		deflateEnd(&z->def);
	inflateEnd(&z->inf);
	free(z->in);
	free(z);
	c->z = NULL;
}

bool conn_compressed(const conn *c)
{
	return c->z != NULL;
}

void conn_puts(conn *c, const char *s)
{
	conn_write(c, s, strlen(s));
}

void conn_printf(conn *c, const char *fmt, ...)
{
	char small[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof small) {
		conn_write(c, small, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (!big) {
		conn_log(c, LOGL_ERR, "out of memory for output; closing");
		hard_close(c);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	conn_write(c, big, (size_t)n);
	free(big);
}

void conn_flush(conn *c)
{
	if (c->state == CONN_OPEN)
		flush(c);
}

size_t conn_queued(const conn *c)
{
	return c->queued;
}

bool conn_congested(const conn *c)
{
	return c->congested;
}

void conn_mode_line(conn *c)
{
	c->bytes_mode = false;
}

void conn_mode_bytes(conn *c)
{
	c->bytes_mode = true;
	c->discarding = false;
}

void conn_pause(conn *c)
{
	c->paused = true;
}

void conn_resume(conn *c)
{
	if (!c->paused)
		return;
	c->paused = false;
	schedule(c, true); /* never call the front-end from inside its own call */
}

void conn_set_timeout(conn *c, unsigned secs)
{
	c->timeout_ms = (uint64_t)secs * 1000;
	c->last_input = now_ms(c);
	if (c->state == CONN_OPEN)
		arm_timer(c);
}

unsigned conn_preauth_timeout(const conn *c)
{
	return c->srv->cfg->limits.preauth_timeout;
}

/* Which configured timeout is a protocol's "after login" one. */
static const struct {
	const char *proto;
	size_t offset;
} idle_timeouts[] = {
	{ "imap", offsetof(struct cfg_limits, imap_idle_timeout) },
	{ "pop3", offsetof(struct cfg_limits, pop3_idle_timeout) },
	{ "lmtp", offsetof(struct cfg_limits, lmtp_timeout) },
};

unsigned conn_idle_timeout(const conn *c)
{
	const struct cfg_limits *lim = &c->srv->cfg->limits;
	for (size_t i = 0; i < sizeof idle_timeouts / sizeof idle_timeouts[0]; i++) {
		if (!strcmp(c->ops->name, idle_timeouts[i].proto))
			return *(const unsigned *)((const char *)lim + idle_timeouts[i].offset);
	}
	return lim->preauth_timeout;
}

/* ---------------------------------------------------------------- logs */

const char *conn_peer(const conn *c)
{
	return c->peer;
}

void conn_set_user(conn *c, const char *user)
{
	free(c->user);
	c->user = user ? strndup(user, USER_MAX) : NULL;
	/* A name means a login: the pre-auth command rate no longer
	 * applies.  NULL (a logout that keeps the connection) brings the
	 * metering back, with a full bucket. */
	if (c->authed && !user) {
		c->tokens = (uint64_t)c->srv->cfg->limits.preauth_command_burst * 1000;
		c->refill_at = now_ms(c);
	}
	c->authed = user != NULL;
}

void conn_log(conn *c, int level, const char *fmt, ...)
{
	char prefix[96 + USER_MAX];
	snprintf(prefix, sizeof prefix, "%" PRIu64 " %s %s%s%s", c->id, c->ops->name,
	         c->peer, c->user ? " " : "", c->user ? c->user : "");
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, prefix, fmt, ap);
	va_end(ap);
}
