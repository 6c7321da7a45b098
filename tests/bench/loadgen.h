/*
 * loadgen.h - onebox-loadgen, the load generator of the benchmark in
 * tests/bench/ (issue 6).  It drives onebox or Dovecot over IMAP, POP3 and
 * LMTP from one libuv loop and measures the server, not itself: every
 * socket is non-blocking, buffers are allocated once per connection,
 * latencies come from CLOCK_MONOTONIC and go into fixed-size log-linear
 * histograms.
 *
 * loadgen.c owns the options, the run's clock, the counters, the
 * histograms and the JSON report; loadgen_conn.c the connections and the
 * response parsing every mode shares; one file per mode holds its client
 * state machines.  tests/bench/README.md documents the command line.
 */
#ifndef ONEBOX_LOADGEN_H
#define ONEBOX_LOADGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#define LG_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ------------------------------------------------------------ options */

struct lg_opts {
	const char *mode;
	const char *host;
	int port;
	int lmtp_port;
	int pop3_port;
	double duration;        /* seconds of new work */
	double max_seconds;     /* hard cap; default 3 * duration + 60 */
	const char *user_fmt;
	const char *rcpt_fmt;
	const char *password;
	int users;
	int clients;
	double timeout;         /* seconds without progress on a response */
	uint64_t seed;
	int refill;             /* pop3: messages per refill */
	size_t size;            /* message size, octets */
	int deliveries;         /* idle */
	int interval_ms;        /* idle */
	double push_timeout;    /* idle, seconds */
	int source_addrs;       /* 127.0.0.1 .. 127.0.0.N */
	int connect_batch;      /* idle: connections being set up at once */
	int repeat;             /* large */
	const char *search_word;
	bool no_pipelining;     /* LMTP: one command per round trip */
};

/* ---------------------------------------------------------- histograms */

/*
 * A log-linear histogram of nanoseconds, like HdrHistogram: values below
 * 256 have a bucket each, and every power of two above is cut into 128
 * buckets, so a bucket's midpoint is within 0.4% of any value in it.
 * Values up to 2^41 ns (about 36 minutes) fit; larger ones are clamped.
 */
#define LG_HIST_SUB_BITS 7
#define LG_HIST_BUCKETS (256 + 34 * 128)

typedef struct lg_stat {
	const char *name;
	bool is_op;             /* a protocol command: counted in "ops" */
	uint64_t n;
	uint64_t max_ns;
	uint64_t sum_ns;
	uint32_t counts[LG_HIST_BUCKETS];
} lg_stat;

/* A named timer, reported under latency_ms when it has samples.  IS_OP:
 * each sample is one command completed.  Never fails (exits on OOM). */
lg_stat *lg_stat_new(const char *name, bool is_op);
void lg_stat_add(lg_stat *st, uint64_t ns);
/* The value at percentile P (0-100) in nanoseconds; 0 when empty. */
uint64_t lg_stat_pct(const lg_stat *st, double p);

/* --------------------------------------------------------- run state */

struct lg_mode {
	const char *name;
	/* Start the clients; -1 when the mode cannot run (reported, exit 1). */
	int (*start)(void);
	/* Called every tick (LG_TICK_MS) with the time: restarts, duration. */
	void (*tick)(uint64_t now);
	/* Stop now (hard cap, signal): close everything, then lg_finish(). */
	void (*stop)(void);
	/* Extra members of the JSON object, each written as ', "k": v'. */
	void (*report)(FILE *out);
	/* Free what start() allocated. */
	void (*cleanup)(void);
};

#define LG_TICK_MS 50

struct lg_state {
	uv_loop_t *loop;
	struct lg_opts o;
	const struct lg_mode *mode;
	uint64_t t_start;       /* ns, CLOCK_MONOTONIC */
	uint64_t t_end;         /* set by lg_finish() */
	uint64_t timeout_ns;
	bool draining;          /* the duration is over: start nothing new */
	bool stopping;          /* hard stop: close everything */
	bool finished;
	bool fatal;             /* the mode could not run at all: exit 1 */
	uint64_t ops;
	uint64_t messages;
	uint64_t errors;
	uint64_t logins_ok;     /* connections that reached their working state */
	uint64_t first_failures; /* clients whose first attempt failed before that */
	uint64_t nclients;      /* for the "could not run at all" check */
	char **users;           /* user names, from user_fmt */
	char **rcpts;           /* LMTP recipients, from rcpt_fmt */
	uint64_t msg_nonce;     /* makes every generated message unique */
	double rate_seconds;    /* when > 0: the rates divide by this, not wall */
};

extern struct lg_state lg;

uint64_t lg_now(void);                  /* CLOCK_MONOTONIC, ns */
/* Count an error and keep the first few lines for the report. */
void lg_error(const char *fmt, ...) LG_PRINTF(1, 2);
/* A client's first attempt failed before it connected or logged in: when
 * every client has failed so and none got in, the mode cannot run. */
void lg_first_failure(void);
/* The mode is done (every connection closed): end the loop. */
void lg_finish(void);
/* Stop everything now (hard cap, signal, fatal). */
void lg_abort(const char *why);
/* A pseudo-random number from *STATE (xorshift64*). */
uint64_t lg_rand(uint64_t *state);

/* The mode implementations (loadgen_<mode>.c). */
extern const struct lg_mode lg_mode_imap_mix;
extern const struct lg_mode lg_mode_pop3;
extern const struct lg_mode lg_mode_lmtp;
extern const struct lg_mode lg_mode_idle;
extern const struct lg_mode lg_mode_large;

/* ---------------------------------------------------------- messages */

/*
 * A generated message of exactly SIZE octets (CRLF lines, no line starting
 * with a dot, so it needs no dot-stuffing), the same bytes for the same
 * seed, and a 16-hex-digit stamp in Subject and Message-ID that
 * lg_msg_stamp() rewrites in place, so that no two messages sent are
 * identical (single-instance storage must not turn the benchmark into a
 * test of deduplication).
 */
typedef struct lg_msg {
	char *data;
	size_t len;
	size_t stamp_off[2];
} lg_msg;

int lg_msg_init(lg_msg *m, size_t size, uint64_t seed);
void lg_msg_stamp(lg_msg *m);
void lg_msg_free(lg_msg *m);

/* -------------------------------------------------------- connections */

/* Flags of a line handed to a connection's line callback. */
enum {
	LG_FIRST = 1,           /* starts a response line (not a continuation) */
	LG_END = 2,             /* ends with CRLF and no literal follows */
	LG_LITERAL = 4,         /* an IMAP literal {n} follows; it is skipped */
};

typedef struct lg_conn lg_conn;
/* One line or fragment, without its CRLF.  Lines longer than the buffer
 * arrive in fragments; only the first has LG_FIRST. */
typedef void (*lg_line_fn)(lg_conn *c, const char *s, size_t n, unsigned flags);
/* The connection is closed; WHY is NULL when it was closed as asked. */
typedef void (*lg_close_fn)(lg_conn *c, const char *why);

struct lg_conn {
	uv_tcp_t tcp;
	uv_connect_t connect_req;
	uv_write_t write_req;
	lg_line_fn on_line;
	lg_close_fn on_close;
	void *owner;
	int index;              /* client index: picks the source address */
	bool imap;              /* skip {n} literals */
	bool open;              /* the handle is live (until the close callback) */
	bool closing;
	bool connected;
	bool eof_ok;            /* the server hanging up is expected */
	bool cont;              /* the next bytes continue a line */
	bool writing;
	char *in;
	size_t in_len;
	size_t in_cap;
	uint64_t literal_left;
	char *out;              /* the bytes in flight, when copied */
	size_t out_cap;
	char *pend;             /* bytes queued behind them */
	size_t pend_len;
	size_t pend_cap;
	uint64_t deadline;      /* ns; 0 when nothing is awaited */
	uint64_t t_sent;        /* when the awaited command was sent */
	lg_stat *op;            /* its timer (may be NULL) */
	unsigned tagno;
	char tag[16];
	size_t taglen;
	char why[200];
	uint64_t bytes_in;
	lg_conn *next_open;
	lg_conn *prev_open;
};

/* Set up C once: BUFSIZE is the line buffer (lines longer than it arrive
 * in fragments).  -1 on allocation failure. */
int lg_conn_init(lg_conn *c, size_t bufsize, bool imap, lg_line_fn on_line,
                 lg_close_fn on_close, void *owner, int index);
void lg_conn_free(lg_conn *c);
/* Connect to PORT on --host.  Failures, now or later, arrive through
 * on_close with a reason.  The deadline is armed for the greeting. */
void lg_conn_connect(lg_conn *c, int port);
void lg_conn_close(lg_conn *c);
void lg_conn_fail(lg_conn *c, const char *fmt, ...) LG_PRINTF(2, 3);
/* Queue bytes: lg_conn_send copies what cannot be written at once;
 * lg_conn_send_ref requires P to stay valid until the write completes. */
void lg_conn_send(lg_conn *c, const void *p, size_t n);
void lg_conn_send_ref(lg_conn *c, const void *p, size_t n);
/* A command line (CRLF added) timed by OP, deadline armed. */
void lg_conn_cmd(lg_conn *c, lg_stat *op, const char *fmt, ...) LG_PRINTF(3, 4);
/* The same with a fresh IMAP tag in front. */
void lg_imap_cmd(lg_conn *c, lg_stat *op, const char *fmt, ...) LG_PRINTF(3, 4);
/* The awaited answer is complete: record its latency, disarm. */
void lg_conn_done(lg_conn *c);
/* The next reply answers a command that went out with the one just done
 * (pipelined): time it from that same send. */
void lg_conn_expect(lg_conn *c, lg_stat *op);
void lg_conn_arm(lg_conn *c);
void lg_conn_disarm(lg_conn *c);
/* Fail every connection whose deadline has passed. */
void lg_conn_sweep(uint64_t now);
/* Close every open connection (hard stop). */
void lg_conn_close_all(void);
/* Open connections. */
uint64_t lg_conn_count(void);

/* ----------------------------------------------------- response parsing */

enum { LG_NOT_TAGGED = 0, LG_OK, LG_NO, LG_BAD, LG_OTHER };

/* The status of a tagged response to C's current command, or
 * LG_NOT_TAGGED when S is not one. */
int lg_imap_tagged(const lg_conn *c, const char *s, size_t n);
/* "* <num> WORD": true and *NUM when S is such a response. */
bool lg_imap_untagged_num(const char *s, size_t n, const char *word, uint64_t *num);
/* The number after KEY (e.g. "UID ") anywhere in S. */
bool lg_find_num(const char *s, size_t n, const char *key, uint64_t *num);
/* The bytes of S up to N as a bounded, printable excerpt for errors. */
const char *lg_excerpt(const char *s, size_t n);
/* POP3: 1 for +OK, 0 for -ERR, -1 for anything else. */
int lg_pop3_status(const char *s, size_t n);
/* SMTP/LMTP: the reply code (or -1), and whether this is the last line. */
int lg_smtp_reply(const char *s, size_t n, bool *last);
/* IMAP quoted string of S into BUF (for LOGIN). */
const char *lg_imap_quote(char *buf, size_t cap, const char *s);

/* ------------------------------------------------------ LMTP sender */

/*
 * One LMTP client connection (loadgen_lmtp.c), used by the lmtp mode, by
 * the pop3 mode's refills and by the idle mode's deliveries: LHLO, then
 * transactions of one recipient each, one command at a time.
 */
enum lg_sender_state {
	LGS_GREETING, LGS_LHLO, LGS_MAIL, LGS_RCPT, LGS_DATA, LGS_BODY, LGS_QUIT
};

typedef struct lg_sender lg_sender;
struct lg_sender {
	lg_conn c;
	enum lg_sender_state st;
	lg_msg msg;
	int rcpt;
	uint64_t t_txn;
	uint64_t t_data;
	/* The user index of the next transaction, or -1 to QUIT. */
	int (*next_rcpt)(lg_sender *s);
	/* A message was accepted (250 after the data) at time T. */
	void (*delivered)(lg_sender *s, uint64_t t);
	/* The connection is closed (WHY NULL: after QUIT, as planned). */
	void (*ended)(lg_sender *s, const char *why);
	void *owner;
	/* Timers (each may be NULL). */
	lg_stat *st_lhlo;
	lg_stat *st_mail;
	lg_stat *st_rcpt;
	lg_stat *st_data;       /* DATA sent to the 250 after the message */
	lg_stat *st_txn;        /* MAIL to 250 after the data */
	bool count_login;       /* LHLO done counts as a login in lg.logins_ok */
	bool ready;             /* LHLO was accepted on this connection */
	bool pipelining;        /* LHLO offered PIPELINING and it is not off */
	int port;
};

int lg_sender_init(lg_sender *s, int index, size_t msg_size, void *owner);
void lg_sender_free(lg_sender *s);
/* Connect to PORT and start: LHLO, then transactions while next_rcpt()
 * gives recipients. */
void lg_sender_start(lg_sender *s, int port);

#endif
