/*
 * loadgen_pop3.c - the pop3 mode: --clients clients, each looping on user
 * (index % users): a POP3 session (USER, PASS, STAT, UIDL, RETR and DELE
 * of every message, QUIT); when STAT finds the mailbox empty, the session
 * QUITs and the client refills it with --refill messages over one LMTP
 * connection (the REFILL timer) before the next session.
 *
 * "messages" counts messages retrieved.  The rates divide by the time the
 * clients spent in POP3 sessions (client-seconds / clients), so refills do
 * not dilute them; the wall-clock rates are reported beside them.
 */
#include "loadgen.h"

#include <stdlib.h>
#include <string.h>

enum pop_state {
	POP_GREETING, POP_USER, POP_PASS, POP_STAT, POP_UIDL, POP_RETR, POP_DELE, POP_QUIT,
};

static const char *const pop_names[] = {
	"greeting", "USER", "PASS", "STAT", "UIDL", "RETR", "DELE", "QUIT",
};

struct pop_client {
	lg_conn c;
	lg_sender s;            /* the refill connection */
	enum pop_state st;
	int index;
	int user;
	bool multi;             /* reading a multi-line answer up to "." */
	bool refill_next;       /* STAT said 0: refill after this session */
	uint64_t count;         /* messages in the session (STAT) */
	uint64_t i;             /* the message being retrieved or deleted */
	int refill_left;
	uint64_t t_session;
	uint64_t t_refill;
	uint64_t restart_at;
	bool active;
	bool done;
	bool ever_ok;
	bool counted_first;
};

static struct pop_client *pclients;
static int npclients;
static int pop_live;
static uint64_t pop_ns;         /* client-nanoseconds in POP3 sessions */
static uint64_t refills, refilled;
static struct {
	lg_stat *user, *pass, *stat, *uidl, *retr, *dele, *quit, *refill;
} ps;

static void pop_check_end(void)
{
	if (pop_live == 0)
		lg_finish();
}

static void pop_retire(struct pop_client *cl)
{
	if (!cl->done) {
		cl->done = true;
		pop_live--;
	}
}

static void pop_begin(struct pop_client *cl)
{
	cl->active = true;
	cl->restart_at = 0;
	cl->st = POP_GREETING;
	cl->multi = false;
	cl->refill_next = false;
	cl->count = 0;
	cl->t_session = lg_now();
	lg_conn_connect(&cl->c, lg.o.port);
}

static void pop_quit(struct pop_client *cl)
{
	cl->c.eof_ok = true;
	lg_conn_cmd(&cl->c, ps.quit, "QUIT");
	cl->st = POP_QUIT;
}

/* The answer to the command in state ST is complete: send the next. */
static void pop_next(struct pop_client *cl, const char *line, size_t n)
{
	lg_conn *c = &cl->c;

	switch (cl->st) {
	case POP_GREETING:
		lg_conn_cmd(c, ps.user, "USER %s", lg.users[cl->user]);
		cl->st = POP_USER;
		break;
	case POP_USER:
		lg_conn_cmd(c, ps.pass, "PASS %s", lg.o.password);
		cl->st = POP_PASS;
		break;
	case POP_PASS:
		cl->ever_ok = true;
		lg.logins_ok++;
		lg_conn_cmd(c, ps.stat, "STAT");
		cl->st = POP_STAT;
		break;
	case POP_STAT: {
		/* "+OK nn mm" (RFC 1939 §5). */
		uint64_t v = 0;
		size_t k = 3;

		while (k < n && line[k] == ' ')
			k++;
		if (k >= n || line[k] < '0' || line[k] > '9') {
			lg_conn_fail(c, "%s", lg_excerpt(line, n));
			return;
		}
		while (k < n && line[k] >= '0' && line[k] <= '9' && v < UINT64_C(1) << 40)
			v = v * 10 + (uint64_t)(line[k++] - '0');
		cl->count = v;
		if (v == 0) {
			cl->refill_next = true;
			pop_quit(cl);
			break;
		}
		lg_conn_cmd(c, ps.uidl, "UIDL");
		cl->st = POP_UIDL;
		break;
	}
	case POP_UIDL:
		cl->i = 1;
		lg_conn_cmd(c, ps.retr, "RETR %llu", (unsigned long long)cl->i);
		cl->st = POP_RETR;
		break;
	case POP_RETR:
		if (++cl->i <= cl->count) {
			lg_conn_cmd(c, ps.retr, "RETR %llu", (unsigned long long)cl->i);
			break;
		}
		cl->i = 1;
		lg_conn_cmd(c, ps.dele, "DELE %llu", (unsigned long long)cl->i);
		cl->st = POP_DELE;
		break;
	case POP_DELE:
		if (++cl->i <= cl->count) {
			lg_conn_cmd(c, ps.dele, "DELE %llu", (unsigned long long)cl->i);
			break;
		}
		pop_quit(cl);
		break;
	case POP_QUIT:
		lg_conn_close(c);
		break;
	}
}

static void pop_line(lg_conn *c, const char *s, size_t n, unsigned flags)
{
	struct pop_client *cl = c->owner;
	int r;

	if (cl->multi) {
		/* RFC 1939 §3: a multi-line answer ends with a line of one
		 * dot; a body line starting with a dot arrives doubled. */
		if ((flags & (LG_FIRST | LG_END)) == (LG_FIRST | LG_END) && n == 1 && s[0] == '.') {
			cl->multi = false;
			lg_conn_done(c);
			if (cl->st == POP_RETR)
				lg.messages++;
			pop_next(cl, s, n);
		}
		return;
	}
	if (!(flags & LG_FIRST))
		return;
	r = lg_pop3_status(s, n);
	if (r < 0) {
		lg_conn_fail(c, "not a status line: %s", lg_excerpt(s, n));
		return;
	}
	if (r == 0 && (cl->st == POP_RETR || cl->st == POP_DELE)) {
		/* The message went away (another client of the same user):
		 * counted, and the session goes on. */
		lg_error("pop3 client %d (%s): %s %llu: %s", cl->index, lg.users[cl->user],
		         pop_names[cl->st], (unsigned long long)cl->i, lg_excerpt(s, n));
		c->op = NULL;
		lg_conn_done(c);
		pop_next(cl, s, n);
		return;
	}
	if (r == 0 && cl->st != POP_QUIT) {
		lg_conn_fail(c, "%s", lg_excerpt(s, n));
		return;
	}
	if (cl->st == POP_UIDL || cl->st == POP_RETR) {
		cl->multi = true;
		return;
	}
	lg_conn_done(c);
	pop_next(cl, s, n);
}

static int refill_rcpt(lg_sender *s)
{
	struct pop_client *cl = s->owner;

	if (lg.draining || cl->refill_left <= 0)
		return -1;
	cl->refill_left--;
	return cl->user;
}

static void refill_delivered(lg_sender *s, uint64_t t)
{
	refilled++;
}

static void pop_after(struct pop_client *cl, bool failed)
{
	if (lg.draining || lg.stopping) {
		pop_retire(cl);
		pop_check_end();
		return;
	}
	if (failed) {
		cl->restart_at = lg_now() + 100000000u;
		return;
	}
	pop_begin(cl);
}

static void refill_ended(lg_sender *s, const char *why)
{
	struct pop_client *cl = s->owner;

	cl->active = false;
	if (why != NULL) {
		if (!lg.stopping)
			lg_error("pop3 client %d: refill of %s: %s", cl->index, lg.users[cl->user], why);
	} else {
		refills++;
		lg_stat_add(ps.refill, lg_now() - cl->t_refill);
	}
	pop_after(cl, why != NULL);
}

static void pop_closed(lg_conn *c, const char *why)
{
	struct pop_client *cl = c->owner;

	pop_ns += lg_now() - cl->t_session;
	lg.rate_seconds = (double)pop_ns / 1e9 / (double)npclients;
	cl->active = false;
	if (why != NULL) {
		if (!lg.stopping)
			lg_error("pop3 client %d (%s), %s: %s", cl->index, lg.users[cl->user],
			         pop_names[cl->st], why);
		if (!cl->ever_ok && !cl->counted_first) {
			cl->counted_first = true;
			lg_first_failure();
		}
		pop_after(cl, true);
		return;
	}
	if (cl->refill_next && !lg.draining && !lg.stopping) {
		cl->active = true;
		cl->refill_left = lg.o.refill;
		cl->t_refill = lg_now();
		lg_sender_start(&cl->s, lg.o.lmtp_port);
		return;
	}
	pop_after(cl, false);
}

static int pop_start(void)
{
	int i;

	ps.user = lg_stat_new("USER", true);
	ps.pass = lg_stat_new("PASS", true);
	ps.stat = lg_stat_new("STAT", true);
	ps.uidl = lg_stat_new("UIDL", true);
	ps.retr = lg_stat_new("RETR", true);
	ps.dele = lg_stat_new("DELE", true);
	ps.quit = lg_stat_new("QUIT", true);
	ps.refill = lg_stat_new("REFILL", false);

	pclients = calloc((size_t)lg.o.clients, sizeof *pclients);
	if (pclients == NULL)
		return -1;
	npclients = lg.o.clients;
	for (i = 0; i < npclients; i++) {
		struct pop_client *cl = &pclients[i];

		if (lg_conn_init(&cl->c, 16384, false, pop_line, pop_closed, cl, i) != 0 ||
		    lg_sender_init(&cl->s, i, lg.o.size, cl) != 0)
			return -1;
		cl->index = i;
		cl->user = i % lg.o.users;
		cl->s.next_rcpt = refill_rcpt;
		cl->s.delivered = refill_delivered;
		cl->s.ended = refill_ended;
		pop_live++;
	}
	for (i = 0; i < npclients; i++)
		pop_begin(&pclients[i]);
	return 0;
}

static void pop_tick(uint64_t now)
{
	int i;

	for (i = 0; i < npclients; i++) {
		struct pop_client *cl = &pclients[i];

		if (cl->active || cl->done || cl->restart_at == 0 || now < cl->restart_at)
			continue;
		if (lg.draining) {
			pop_retire(cl);
			continue;
		}
		pop_begin(cl);
	}
	pop_check_end();
}

static void pop_stop(void)
{
	int i;

	lg_conn_close_all();
	for (i = 0; i < npclients; i++)
		if (!pclients[i].active)
			pop_retire(&pclients[i]);
	pop_check_end();
}

static void pop_report(FILE *out)
{
	double wall = (double)(lg.t_end - lg.t_start) / 1e9;

	fprintf(out, ", \"pop3_seconds\": %.3f, \"wall_messages_per_sec\": %.2f, "
	        "\"wall_ops_per_sec\": %.2f, \"refills\": %llu, \"refilled\": %llu, \"size\": %zu",
	        lg.rate_seconds, wall > 0 ? (double)lg.messages / wall : 0.0,
	        wall > 0 ? (double)lg.ops / wall : 0.0, (unsigned long long)refills,
	        (unsigned long long)refilled, lg.o.size);
}

static void pop_cleanup(void)
{
	int i;

	if (pclients == NULL)
		return;
	for (i = 0; i < npclients; i++) {
		lg_conn_free(&pclients[i].c);
		lg_sender_free(&pclients[i].s);
	}
	free(pclients);
	pclients = NULL;
}

const struct lg_mode lg_mode_pop3 = {
	.name = "pop3",
	.start = pop_start,
	.tick = pop_tick,
	.stop = pop_stop,
	.report = pop_report,
	.cleanup = pop_cleanup,
};
