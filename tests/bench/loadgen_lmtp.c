/*
 * loadgen_lmtp.c - the LMTP sender (one connection: LHLO, then one
 * transaction per message with one recipient) and the lmtp mode built on
 * it: --clients senders delivering --size messages until the duration is
 * over.  When the server offers PIPELINING, MAIL, RCPT and DATA go out in
 * one write and the sender waits for the 354 (RFC 2920 §3.1: DATA ends a
 * group), as Postfix's LMTP client does; --no-pipelining waits for each
 * reply instead.
 */
#include "loadgen.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- sender */

static const char dot_crlf[] = ".\r\n";

static void sender_next(lg_sender *s)
{
	lg_conn *c = &s->c;
	int r = s->next_rcpt(s);

	if (r < 0) {
		c->eof_ok = true;
		lg_conn_cmd(c, NULL, "QUIT");
		s->st = LGS_QUIT;
		return;
	}
	s->rcpt = r;
	s->t_txn = lg_now();
	if (s->pipelining)
		/* One group, one write; each reply is timed from it. */
		lg_conn_cmd(c, s->st_mail, "MAIL FROM:<loadgen@example.com>\r\n"
		            "RCPT TO:<%s>\r\nDATA", lg.rcpts[r]);
	else
		lg_conn_cmd(c, s->st_mail, "MAIL FROM:<loadgen@example.com>");
	s->st = LGS_MAIL;
}

/* Does a line of the LHLO reply ("250-PIPELINING") offer KEYWORD? */
static bool lhlo_offers(const char *line, size_t n, const char *keyword)
{
	size_t k = strlen(keyword);

	return n >= 4 + k && strncasecmp(line + 4, keyword, k) == 0 &&
	       (n == 4 + k || line[4 + k] == ' ');
}

static void sender_line(lg_conn *c, const char *line, size_t n, unsigned flags)
{
	lg_sender *s = c->owner;
	bool last = false;
	int code;

	if (!(flags & LG_FIRST))
		return;
	code = lg_smtp_reply(line, n, &last);
	if (code < 0) {
		lg_conn_fail(c, "LMTP: not a reply: %s", lg_excerpt(line, n));
		return;
	}
	if (s->st == LGS_LHLO && code == 250 && lhlo_offers(line, n, "PIPELINING"))
		s->pipelining = !lg.o.no_pipelining;
	if (!last)
		return;
	switch (s->st) {
	case LGS_GREETING:
		if (code != 220)
			break;
		lg_conn_cmd(c, s->st_lhlo, "LHLO loadgen.example.com");
		s->st = LGS_LHLO;
		return;
	case LGS_LHLO:
		if (code != 250)
			break;
		lg_conn_done(c);
		s->ready = true;
		if (s->count_login)
			lg.logins_ok++;
		sender_next(s);
		return;
	case LGS_MAIL:
		if (code != 250)
			break;
		lg_conn_done(c);
		if (s->pipelining)
			lg_conn_expect(c, s->st_rcpt);
		else
			lg_conn_cmd(c, s->st_rcpt, "RCPT TO:<%s>", lg.rcpts[s->rcpt]);
		s->st = LGS_RCPT;
		return;
	case LGS_RCPT:
		if (code != 250 && code != 251)
			break;
		lg_conn_done(c);
		if (s->pipelining)
			lg_conn_expect(c, s->st_data);
		else
			lg_conn_cmd(c, s->st_data, "DATA");
		s->st = LGS_DATA;
		return;
	case LGS_DATA:
		if (code != 354)
			break;
		/* The DATA timer runs on from the DATA command to the 250
		 * after the message: transfer and durable commit. */
		lg_msg_stamp(&s->msg);
		s->t_data = lg_now();
		lg_conn_send_ref(c, s->msg.data, s->msg.len);
		lg_conn_send_ref(c, dot_crlf, sizeof dot_crlf - 1);
		lg_conn_arm(c);
		s->st = LGS_BODY;
		return;
	case LGS_BODY:
		if (code != 250)
			break;
		{
			uint64_t now = lg_now();

			lg_conn_done(c);
			if (s->st_txn != NULL)
				lg_stat_add(s->st_txn, now - s->t_txn);
			s->delivered(s, now);
		}
		if (c->open && !c->closing)
			sender_next(s);
		return;
	case LGS_QUIT:
		lg_conn_done(c);
		lg_conn_close(c);
		return;
	}
	{
		static const char *const names[] = {
			"greeting", "LHLO", "MAIL", "RCPT", "DATA", "end of data", "QUIT",
		};

		lg_conn_fail(c, "LMTP %s: %s", names[s->st], lg_excerpt(line, n));
	}
}

static void sender_closed(lg_conn *c, const char *why)
{
	lg_sender *s = c->owner;

	s->ended(s, why);
}

int lg_sender_init(lg_sender *s, int index, size_t msg_size, void *owner)
{
	memset(s, 0, sizeof *s);
	if (lg_conn_init(&s->c, 4096, false, sender_line, sender_closed, s, index) != 0)
		return -1;
	if (lg_msg_init(&s->msg, msg_size, lg.o.seed + (uint64_t)index) != 0) {
		lg_conn_free(&s->c);
		return -1;
	}
	s->owner = owner;
	return 0;
}

void lg_sender_free(lg_sender *s)
{
	lg_conn_free(&s->c);
	lg_msg_free(&s->msg);
}

void lg_sender_start(lg_sender *s, int port)
{
	s->st = LGS_GREETING;
	s->ready = false;
	s->pipelining = false;
	s->port = port;
	lg_conn_connect(&s->c, port);
}

/* ------------------------------------------------------------- lmtp mode */

struct lmtp_client {
	lg_sender s;
	int index;
	uint64_t k;             /* transactions started: picks the recipient */
	uint64_t restart_at;    /* after an error: reconnect then */
	bool active;            /* a connection is open */
	bool done;              /* will not start again */
	bool ever_ok;
	bool counted_first;
};

static struct lmtp_client *lclients;
static int nlclients;
static int lmtp_live;

static void lmtp_check_end(void)
{
	if (lmtp_live == 0)
		lg_finish();
}

static void lmtp_retire(struct lmtp_client *cl)
{
	if (!cl->done) {
		cl->done = true;
		lmtp_live--;
	}
}

static int lmtp_next_rcpt(lg_sender *s)
{
	struct lmtp_client *cl = s->owner;

	if (lg.draining)
		return -1;
	return (int)(((uint64_t)cl->index + cl->k++) % (uint64_t)lg.o.users);
}

static void lmtp_delivered(lg_sender *s, uint64_t t)
{
	lg.messages++;
}

static void lmtp_begin(struct lmtp_client *cl)
{
	cl->active = true;
	cl->restart_at = 0;
	lg_sender_start(&cl->s, lg.o.port);
}

static void lmtp_ended(lg_sender *s, const char *why)
{
	struct lmtp_client *cl = s->owner;

	cl->active = false;
	if (s->ready)
		cl->ever_ok = true;
	if (why != NULL) {
		if (!lg.stopping)
			lg_error("lmtp sender %d: %s", cl->index, why);
		if (!cl->ever_ok && !cl->counted_first) {
			cl->counted_first = true;
			lg_first_failure();
		}
	}
	if (lg.draining || lg.stopping) {
		lmtp_retire(cl);
		lmtp_check_end();
		return;
	}
	/* A failed connection is retried after a pause, so that a server
	 * that refuses does not turn the run into a busy loop. */
	cl->restart_at = lg_now() + (why != NULL ? 100000000u : 0);
	if (why == NULL)
		lmtp_begin(cl);
}

static int lmtp_start(void)
{
	int i;

	lclients = calloc((size_t)lg.o.clients, sizeof *lclients);
	if (lclients == NULL)
		return -1;
	nlclients = lg.o.clients;
	{
		lg_stat *lhlo = lg_stat_new("LHLO", true);
		lg_stat *mail = lg_stat_new("MAIL", true);
		lg_stat *rcpt = lg_stat_new("RCPT", true);
		lg_stat *data = lg_stat_new("DATA", true);
		lg_stat *txn = lg_stat_new("TXN", false);

		for (i = 0; i < nlclients; i++) {
			struct lmtp_client *cl = &lclients[i];

			if (lg_sender_init(&cl->s, i, lg.o.size, cl) != 0)
				return -1;
			cl->index = i;
			cl->s.next_rcpt = lmtp_next_rcpt;
			cl->s.delivered = lmtp_delivered;
			cl->s.ended = lmtp_ended;
			cl->s.st_lhlo = lhlo;
			cl->s.st_mail = mail;
			cl->s.st_rcpt = rcpt;
			cl->s.st_data = data;
			cl->s.st_txn = txn;
			cl->s.count_login = true;
			lmtp_live++;
		}
	}
	for (i = 0; i < nlclients; i++)
		lmtp_begin(&lclients[i]);
	return 0;
}

static void lmtp_tick(uint64_t now)
{
	int i;

	for (i = 0; i < nlclients; i++) {
		struct lmtp_client *cl = &lclients[i];

		if (cl->active || cl->done || cl->restart_at == 0 || now < cl->restart_at)
			continue;
		if (lg.draining) {
			lmtp_retire(cl);
			continue;
		}
		lmtp_begin(cl);
	}
	lmtp_check_end();
}

static void lmtp_stop(void)
{
	int i;

	lg_conn_close_all();
	for (i = 0; i < nlclients; i++)
		if (!lclients[i].active)
			lmtp_retire(&lclients[i]);
	lmtp_check_end();
}

static void lmtp_report(FILE *out)
{
	fprintf(out, ", \"size\": %zu", lg.o.size);
}

static void lmtp_cleanup(void)
{
	int i;

	if (lclients == NULL)
		return;
	for (i = 0; i < nlclients; i++)
		lg_sender_free(&lclients[i].s);
	free(lclients);
	lclients = NULL;
}

const struct lg_mode lg_mode_lmtp = {
	.name = "lmtp",
	.start = lmtp_start,
	.tick = lmtp_tick,
	.stop = lmtp_stop,
	.report = lmtp_report,
	.cleanup = lmtp_cleanup,
};
