/*
 * loadgen_idle.c - the idle mode: --clients IMAP connections (at most
 * --connect-batch being set up at once) LOGIN as user 0, SELECT INBOX and
 * IDLE (RFC 2177).  When all are idling it writes "READY <n>" on stderr
 * and waits for a line on stdin (the harness measures memory meanwhile),
 * then delivers --deliveries messages over LMTP, one at a time: t0 is the
 * arrival of the 250, and for each connection the push latency is the
 * arrival of its "* n EXISTS" with the new count, less t0 (0 when it came
 * first).  Connections without it after --push-timeout are missed.  Then
 * DONE and LOGOUT on every connection.  --duration only sets the hard cap.
 */
#include "loadgen.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum idle_state {
	IS_NEW, IS_GREETING, IS_LOGIN, IS_SELECT, IS_IDLE, IS_IDLING, IS_DONE, IS_LOGOUT,
	IS_CLOSED,
};

static const char *const is_names[] = {
	"new", "greeting", "LOGIN", "SELECT", "IDLE", "idling", "DONE", "LOGOUT", "closed",
};

enum idle_phase { PH_CONNECT, PH_READY, PH_DELIVER, PH_LOGOUT, PH_END };

struct idle_conn {
	lg_conn c;
	enum idle_state st;
	uint64_t base;          /* EXISTS after SELECT */
	uint64_t exists;        /* the latest EXISTS */
	uint64_t want;          /* the count that shows this round's message */
	uint64_t t_got;
	bool in_round;
	bool got;
};

static struct idle_conn *iconns;
static int niconns;
static enum idle_phase phase;
static int next_start;          /* connect phase: next connection to open */
static int setting_up;          /* connections between connect and "+" */
static uint64_t n_connected, n_idle, n_lost;
static int open_conns;          /* connections with a live socket */

static lg_sender sender;
static bool sender_init_done, sender_active;
static int rounds_done, deliveries_ok;
static bool round_open;         /* a round is measuring */
static bool next_round_waiting; /* the interval passed while the sender closed */
static uint64_t t0;             /* the round's 250, 0 before it */
static int round_targets, round_got, round_dead;
static uint64_t missed;
static int sender_rcpt_left;

static uv_timer_t push_timer, interval_timer;
static bool timers_init;
static uv_pipe_t stdin_pipe;
static uv_tty_t stdin_tty;
static uv_stream_t *stdin_stream;
static char stdin_buf[256];

static lg_stat push_stat = { .name = "push" };
static lg_stat push_data_stat = { .name = "push_after_data" };
static struct {
	lg_stat *connect, *login, *select, *idle, *done, *logout;
} is;

static void start_round(void);
static void begin_logout(void);
static void on_interval(uv_timer_t *t);

/* ------------------------------------------------------------ the end */

static void close_timer(uv_timer_t *t)
{
	if (!uv_is_closing((uv_handle_t *)t))
		uv_close((uv_handle_t *)t, NULL);
}

static void maybe_end(void)
{
	if (phase == PH_END || open_conns > 0 || sender_active || stdin_stream != NULL)
		return;
	if (phase != PH_LOGOUT && !lg.stopping)
		return;
	phase = PH_END;
	if (timers_init) {
		close_timer(&push_timer);
		close_timer(&interval_timer);
	}
	lg_finish();
}

/* --------------------------------------------------------- connect phase */

static void start_more(void);

static void begin_conn(struct idle_conn *ic)
{
	ic->st = IS_GREETING;
	ic->exists = 0;
	open_conns++;
	setting_up++;
	lg_conn_connect(&ic->c, lg.o.port);
}

static void on_stdin_done(void);

static void stdin_closed(uv_handle_t *h)
{
	stdin_stream = NULL;
	on_stdin_done();
}

static void stdin_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	buf->base = stdin_buf;
	buf->len = sizeof stdin_buf;
}

static void stdin_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	/* One line, EOF or an error: any of them means "go on". */
	if (n == 0 || (n > 0 && memchr(buf->base, '\n', (size_t)n) == NULL))
		return;
	uv_read_stop(s);
	if (!uv_is_closing((uv_handle_t *)s))
		uv_close((uv_handle_t *)s, stdin_closed);
}

/* All connections are set up: tell the harness, wait for its line. */
static void enter_ready(void)
{
	uv_handle_type t = uv_guess_handle(0);
	int rc = -1;

	phase = PH_READY;
	fprintf(stderr, "READY %llu\n", (unsigned long long)n_idle);
	fflush(stderr);
	if (t == UV_NAMED_PIPE || t == UV_TCP) {
		rc = uv_pipe_init(lg.loop, &stdin_pipe, 0);
		if (rc == 0) {
			stdin_stream = (uv_stream_t *)&stdin_pipe;
			rc = uv_pipe_open(&stdin_pipe, 0);
		}
	} else if (t == UV_TTY) {
		rc = uv_tty_init(lg.loop, &stdin_tty, 0, 1);
		if (rc == 0)
			stdin_stream = (uv_stream_t *)&stdin_tty;
	}
	if (rc == 0)
		rc = uv_read_start(stdin_stream, stdin_alloc, stdin_read);
	if (rc == 0)
		return;
	if (stdin_stream != NULL) {
		uv_close((uv_handle_t *)stdin_stream, stdin_closed);
		return;
	}
	if (t == UV_FILE) {
		/* A file or /dev/null: a read does not wait for long. */
		char ch;
		int k;

		for (k = 0; k < 4096; k++) {
			ssize_t r = read(0, &ch, 1);

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0 || ch == '\n')
				break;
		}
	}
	on_stdin_done();
}

static void on_stdin_done(void)
{
	if (lg.stopping) {
		maybe_end();
		return;
	}
	phase = PH_DELIVER;
	if (lg.o.deliveries == 0 || n_idle == 0) {
		begin_logout();
		return;
	}
	start_round();
}

/* One connection left the connect phase (idling or failed). */
static void setup_over(void)
{
	setting_up--;
	start_more();
}

static void start_more(void)
{
	if (phase != PH_CONNECT || lg.stopping)
		return;
	while (setting_up < lg.o.connect_batch && next_start < niconns && !lg.stopping)
		begin_conn(&iconns[next_start++]);
	if (next_start == niconns && setting_up == 0 && !lg.stopping)
		enter_ready();
}

/* ------------------------------------------------------------ deliveries */

static void round_end(void)
{
	int i;

	if (!round_open)
		return;
	round_open = false;
	uv_timer_stop(&push_timer);
	missed += (uint64_t)(round_targets - round_got);
	for (i = 0; i < niconns; i++)
		iconns[i].in_round = false;
	rounds_done++;
	if (lg.stopping)
		return;
	if (rounds_done >= lg.o.deliveries) {
		begin_logout();
		return;
	}
	uv_timer_start(&interval_timer, on_interval, (uint64_t)lg.o.interval_ms, 0);
}

static void check_round(void)
{
	if (round_open && t0 != 0 && round_got + round_dead >= round_targets)
		round_end();
}

static void on_push_timeout(uv_timer_t *t)
{
	round_end();
}

static void on_interval(uv_timer_t *t)
{
	if (lg.stopping || phase != PH_DELIVER)
		return;
	if (sender_active) {
		next_round_waiting = true;
		return;
	}
	start_round();
}

static int sender_next(lg_sender *s)
{
	if (sender_rcpt_left <= 0 || lg.stopping)
		return -1;
	sender_rcpt_left--;
	return 0;
}

static void sender_delivered(lg_sender *s, uint64_t t)
{
	int i;

	t0 = t;
	deliveries_ok++;
	lg.messages++;
	/* Pushes that beat the 250 count as instant. */
	for (i = 0; i < niconns; i++) {
		struct idle_conn *ic = &iconns[i];

		if (ic->in_round && ic->got)
			lg_stat_add(&push_stat, ic->t_got > t0 ? ic->t_got - t0 : 0);
	}
	uv_timer_start(&push_timer, on_push_timeout, (uint64_t)(lg.o.push_timeout * 1000), 0);
	check_round();
}

static void sender_ended(lg_sender *s, const char *why)
{
	sender_active = false;
	if (why != NULL && !lg.stopping)
		lg_error("idle: delivery %d: %s", rounds_done + 1, why);
	if (round_open && t0 == 0) {
		/* Nothing was delivered: this round measures nothing. */
		round_targets = round_got = round_dead = 0;
		round_end();
	}
	if (lg.stopping || phase == PH_LOGOUT) {
		maybe_end();
		return;
	}
	if (next_round_waiting) {
		next_round_waiting = false;
		start_round();
	}
}

static void start_round(void)
{
	int i;

	round_targets = round_got = round_dead = 0;
	t0 = 0;
	for (i = 0; i < niconns; i++) {
		struct idle_conn *ic = &iconns[i];

		ic->in_round = ic->st == IS_IDLING;
		ic->got = false;
		if (!ic->in_round)
			continue;
		ic->want = ic->base + (uint64_t)deliveries_ok + 1;
		round_targets++;
	}
	if (round_targets == 0) {
		begin_logout();
		return;
	}
	round_open = true;
	sender.t_data = 0;
	sender_rcpt_left = 1;
	sender_active = true;
	lg_sender_start(&sender, lg.o.lmtp_port);
}

/* ---------------------------------------------------------------- logout */

static void begin_logout(void)
{
	int i;

	phase = PH_LOGOUT;
	for (i = 0; i < niconns; i++) {
		struct idle_conn *ic = &iconns[i];

		if (ic->st == IS_IDLING) {
			/* RFC 2177 §3: DONE ends the IDLE; its tagged OK follows. */
			lg_conn_cmd(&ic->c, is.done, "DONE");
			ic->st = IS_DONE;
		} else if (ic->c.open) {
			lg_conn_close(&ic->c);
		}
	}
	maybe_end();
}

/* ----------------------------------------------------------- connections */

static void idle_line(lg_conn *c, const char *s, size_t n, unsigned flags)
{
	struct idle_conn *ic = c->owner;
	char qu[512], qp[512];
	uint64_t num;
	int r;

	if (!(flags & LG_FIRST))
		return;
	if (n >= 2 && s[0] == '*' && s[1] == ' ') {
		if (ic->st == IS_GREETING) {
			if (n < 4 || strncasecmp(s, "* OK", 4) != 0) {
				lg_conn_fail(c, "%s", lg_excerpt(s, n));
				return;
			}
			n_connected++;
			lg_stat_add(is.connect, lg_now() - c->t_sent);
			lg_imap_cmd(c, is.login, "LOGIN %s %s",
			            lg_imap_quote(qu, sizeof qu, lg.users[0]),
			            lg_imap_quote(qp, sizeof qp, lg.o.password));
			ic->st = IS_LOGIN;
		} else if (lg_imap_untagged_num(s, n, "EXISTS", &num)) {
			uint64_t now = lg_now();

			ic->exists = num;
			if (ic->in_round && !ic->got && num >= ic->want) {
				ic->got = true;
				ic->t_got = now;
				round_got++;
				if (sender.t_data != 0 && now > sender.t_data)
					lg_stat_add(&push_data_stat, now - sender.t_data);
				if (t0 != 0) {
					lg_stat_add(&push_stat, now - t0);
					check_round();
				}
			}
		} else if (lg_imap_untagged_num(s, n, "EXPUNGE", &num)) {
			if (ic->exists > 0)
				ic->exists--;
		}
		return;
	}
	if (n >= 1 && s[0] == '+') {
		if (ic->st != IS_IDLE) {
			lg_conn_fail(c, "unexpected continuation");
			return;
		}
		lg_conn_done(c);
		ic->st = IS_IDLING;
		n_idle++;
		setup_over();
		return;
	}
	r = lg_imap_tagged(c, s, n);
	if (r == LG_NOT_TAGGED)
		return;
	if (r != LG_OK) {
		lg_conn_fail(c, "%s", lg_excerpt(s, n));
		return;
	}
	lg_conn_done(c);
	switch (ic->st) {
	case IS_LOGIN:
		lg.logins_ok++;
		ic->exists = 0;
		lg_imap_cmd(c, is.select, "SELECT INBOX");
		ic->st = IS_SELECT;
		break;
	case IS_SELECT:
		ic->base = ic->exists;
		lg_imap_cmd(c, is.idle, "IDLE");
		ic->st = IS_IDLE;
		break;
	case IS_DONE:
		c->eof_ok = true;
		lg_imap_cmd(c, is.logout, "LOGOUT");
		ic->st = IS_LOGOUT;
		break;
	case IS_LOGOUT:
		lg_conn_close(c);
		break;
	default:
		lg_conn_fail(c, "unexpected %s", lg_excerpt(s, n));
		break;
	}
}

static void idle_closed(lg_conn *c, const char *why)
{
	struct idle_conn *ic = c->owner;
	enum idle_state was = ic->st;

	ic->st = IS_CLOSED;
	open_conns--;
	if (why != NULL && !lg.stopping)
		lg_error("idle connection %d: %s: %s", ic->c.index, is_names[was], why);
	if (was < IS_IDLING) {
		if (why != NULL)
			lg_first_failure();
		if (phase == PH_CONNECT)
			setup_over();
	} else if (was == IS_IDLING && phase != PH_LOGOUT && !lg.stopping) {
		n_lost++;
		if (ic->in_round && !ic->got) {
			round_dead++;
			check_round();
		}
	}
	maybe_end();
}

/* ------------------------------------------------------------ the mode */

static int idle_start(void)
{
	int i;

	is.connect = lg_stat_new("CONNECT", false);
	is.login = lg_stat_new("LOGIN", true);
	is.select = lg_stat_new("SELECT", true);
	is.idle = lg_stat_new("IDLE", true);
	is.done = lg_stat_new("DONE", true);
	is.logout = lg_stat_new("LOGOUT", true);

	uv_timer_init(lg.loop, &push_timer);
	uv_timer_init(lg.loop, &interval_timer);
	timers_init = true;
	iconns = calloc((size_t)lg.o.clients, sizeof *iconns);
	if (iconns == NULL)
		return -1;
	niconns = lg.o.clients;
	for (i = 0; i < niconns; i++)
		if (lg_conn_init(&iconns[i].c, 4096, true, idle_line, idle_closed, &iconns[i], i) != 0)
			return -1;
	if (lg_sender_init(&sender, 0, lg.o.size, NULL) != 0)
		return -1;
	sender_init_done = true;
	sender.next_rcpt = sender_next;
	sender.delivered = sender_delivered;
	sender.ended = sender_ended;
	sender.st_data = lg_stat_new("LMTP_DATA", true);
	phase = PH_CONNECT;
	start_more();
	return 0;
}

static void idle_tick(uint64_t now)
{
}

static void idle_stop(void)
{
	lg_conn_close_all();
	if (timers_init) {
		uv_timer_stop(&push_timer);
		uv_timer_stop(&interval_timer);
	}
	round_open = false;
	if (stdin_stream != NULL && !uv_is_closing((uv_handle_t *)stdin_stream)) {
		uv_read_stop(stdin_stream);
		uv_close((uv_handle_t *)stdin_stream, stdin_closed);
	}
	maybe_end();
}

static void idle_report(FILE *out)
{
	fprintf(out, ", \"connected\": %llu, \"idle\": %llu, \"lost\": %llu, "
	        "\"deliveries\": %d, \"push_ms\": {\"n\": %llu, \"p50\": %.3f, \"p99\": %.3f, "
	        "\"max\": %.3f}, \"missed\": %llu",
	        (unsigned long long)n_connected, (unsigned long long)n_idle,
	        (unsigned long long)n_lost, deliveries_ok, (unsigned long long)push_stat.n,
	        (double)lg_stat_pct(&push_stat, 50) / 1e6, (double)lg_stat_pct(&push_stat, 99) / 1e6,
	        (double)push_stat.max_ns / 1e6, (unsigned long long)missed);
	fprintf(out, ", \"push_after_data_ms\": {\"n\": %llu, \"p50\": %.3f, \"p99\": %.3f, "
	        "\"max\": %.3f}",
	        (unsigned long long)push_data_stat.n, (double)lg_stat_pct(&push_data_stat, 50) / 1e6,
	        (double)lg_stat_pct(&push_data_stat, 99) / 1e6,
	        (double)push_data_stat.max_ns / 1e6);
}

static void idle_cleanup(void)
{
	int i;

	if (iconns != NULL) {
		for (i = 0; i < niconns; i++)
			lg_conn_free(&iconns[i].c);
		free(iconns);
		iconns = NULL;
	}
	if (sender_init_done)
		lg_sender_free(&sender);
}

const struct lg_mode lg_mode_idle = {
	.name = "idle",
	.start = idle_start,
	.tick = idle_tick,
	.stop = idle_stop,
	.report = idle_report,
	.cleanup = idle_cleanup,
};
