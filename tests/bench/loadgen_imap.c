/*
 * loadgen_imap.c - the imap-mix mode: --clients clients, each looping one
 * session on user (index % users): LOGIN, SELECT INBOX, FETCH 1:* (FLAGS),
 * FETCH of the last five bodies, STORE of \Seen (set and cleared in turn),
 * APPEND of a 4 KiB message, UID STORE \Deleted on the UID its APPENDUID
 * names (RFC 4315 §3), EXPUNGE, LOGOUT.  The mailbox ends each session as
 * it began.  Latency is kept per command; "messages" counts sessions.
 */
#include "loadgen.h"

#include <stdlib.h>
#include <string.h>

#define MIX_APPEND_SIZE 4096

enum mix_state {
	MIX_GREETING, MIX_LOGIN, MIX_SELECT, MIX_FETCH_FLAGS, MIX_FETCH_BODY, MIX_STORE,
	MIX_APPEND, MIX_APPEND_DATA, MIX_UID_STORE, MIX_EXPUNGE, MIX_LOGOUT,
};

static const char *const mix_names[] = {
	"greeting", "LOGIN", "SELECT", "FETCH FLAGS", "FETCH BODY", "STORE", "APPEND",
	"APPEND", "UID STORE", "EXPUNGE", "LOGOUT",
};

struct mix_client {
	lg_conn c;
	enum mix_state st;
	int index;
	int user;
	uint64_t exists;        /* the session's view, kept by EXISTS/EXPUNGE */
	uint64_t appended_uid;
	uint64_t rng;
	bool set_seen;          /* this session's STORE sets \Seen (else clears) */
	lg_msg msg;
	uint64_t t_session;
	uint64_t restart_at;
	bool active;
	bool done;
	bool ever_ok;
	bool counted_first;
};

static struct mix_client *mclients;
static int nmclients;
static int mix_live;
static struct {
	lg_stat *login, *select, *fetch_flags, *fetch_body, *store, *append, *uid_store,
		*expunge, *logout, *session;
} ms;

static void mix_check_end(void)
{
	if (mix_live == 0)
		lg_finish();
}

static void mix_retire(struct mix_client *cl)
{
	if (!cl->done) {
		cl->done = true;
		mix_live--;
	}
}

static void mix_begin(struct mix_client *cl)
{
	cl->active = true;
	cl->restart_at = 0;
	cl->st = MIX_GREETING;
	cl->exists = 0;
	cl->appended_uid = 0;
	cl->t_session = lg_now();
	lg_conn_connect(&cl->c, lg.o.port);
}

static void mix_append(struct mix_client *cl)
{
	lg_msg_stamp(&cl->msg);
	/* A synchronizing literal (RFC 3501 §7.5): the data goes after "+". */
	lg_imap_cmd(&cl->c, ms.append, "APPEND INBOX {%zu}", cl->msg.len);
	cl->st = MIX_APPEND;
}

/* The tagged OK of the command in state ST arrived: send the next one. */
static void mix_next(struct mix_client *cl, const char *line, size_t n)
{
	lg_conn *c = &cl->c;
	char qu[512], qp[512];

	switch (cl->st) {
	case MIX_GREETING:
		lg_imap_cmd(c, ms.login, "LOGIN %s %s",
		            lg_imap_quote(qu, sizeof qu, lg.users[cl->user]),
		            lg_imap_quote(qp, sizeof qp, lg.o.password));
		cl->st = MIX_LOGIN;
		break;
	case MIX_LOGIN:
		cl->ever_ok = true;
		lg.logins_ok++;
		cl->exists = 0;
		lg_imap_cmd(c, ms.select, "SELECT INBOX");
		cl->st = MIX_SELECT;
		break;
	case MIX_SELECT:
		if (cl->exists == 0) {
			/* "1:*" on an empty mailbox is an error on some servers. */
			mix_append(cl);
			break;
		}
		lg_imap_cmd(c, ms.fetch_flags, "FETCH 1:* (FLAGS)");
		cl->st = MIX_FETCH_FLAGS;
		break;
	case MIX_FETCH_FLAGS:
		if (cl->exists == 0) {
			mix_append(cl);
			break;
		}
		lg_imap_cmd(c, ms.fetch_body, "FETCH %llu:%llu BODY.PEEK[]",
		            (unsigned long long)(cl->exists > 5 ? cl->exists - 4 : 1),
		            (unsigned long long)cl->exists);
		cl->st = MIX_FETCH_BODY;
		break;
	case MIX_FETCH_BODY:
		if (cl->exists == 0) {
			mix_append(cl);
			break;
		}
		lg_imap_cmd(c, ms.store, "STORE %llu %cFLAGS (\\Seen)",
		            (unsigned long long)(1 + lg_rand(&cl->rng) % cl->exists),
		            cl->set_seen ? '+' : '-');
		cl->set_seen = !cl->set_seen;
		cl->st = MIX_STORE;
		break;
	case MIX_STORE:
		mix_append(cl);
		break;
	case MIX_APPEND:
		/* An OK before the "+": the server took no data.  Treat as the
		 * APPEND_DATA case, where the UID is looked for. */
	case MIX_APPEND_DATA: {
		/* "OK [APPENDUID <uidvalidity> <uid>]" (RFC 4315 §3). */
		const char *p = n > 12 ? memmem(line, n, "APPENDUID ", 10) : NULL;
		uint64_t uidv = 0, uid = 0;

		if (p != NULL) {
			const char *end = line + n;

			p += 10;
			while (p < end && *p >= '0' && *p <= '9')
				uidv = uidv * 10 + (uint64_t)(*p++ - '0');
			if (p < end && *p == ' ')
				p++;
			while (p < end && *p >= '0' && *p <= '9')
				uid = uid * 10 + (uint64_t)(*p++ - '0');
		}
		if (uid == 0) {
			lg_conn_fail(c, "no APPENDUID in: %s", lg_excerpt(line, n));
			return;
		}
		cl->appended_uid = uid;
		lg_imap_cmd(c, ms.uid_store, "UID STORE %llu +FLAGS.SILENT (\\Deleted)",
		            (unsigned long long)uid);
		cl->st = MIX_UID_STORE;
		break;
	}
	case MIX_UID_STORE:
		lg_imap_cmd(c, ms.expunge, "EXPUNGE");
		cl->st = MIX_EXPUNGE;
		break;
	case MIX_EXPUNGE:
		c->eof_ok = true;
		lg_imap_cmd(c, ms.logout, "LOGOUT");
		cl->st = MIX_LOGOUT;
		break;
	case MIX_LOGOUT:
		lg.messages++;
		lg_stat_add(ms.session, lg_now() - cl->t_session);
		lg_conn_close(c);
		break;
	}
}

static void mix_line(lg_conn *c, const char *s, size_t n, unsigned flags)
{
	struct mix_client *cl = c->owner;
	uint64_t num;
	int r;

	if (!(flags & LG_FIRST))
		return;
	if (n >= 2 && s[0] == '*' && s[1] == ' ') {
		if (cl->st == MIX_GREETING) {
			if (n >= 4 && strncasecmp(s, "* OK", 4) == 0) {
				lg_conn_done(c);
				mix_next(cl, s, n);
			} else {
				lg_conn_fail(c, "%s", lg_excerpt(s, n));
			}
		} else if (lg_imap_untagged_num(s, n, "EXISTS", &num)) {
			cl->exists = num;
		} else if (lg_imap_untagged_num(s, n, "EXPUNGE", &num)) {
			if (cl->exists > 0)
				cl->exists--;
		}
		return;
	}
	if (n >= 1 && s[0] == '+') {
		if (cl->st != MIX_APPEND) {
			lg_conn_fail(c, "unexpected continuation");
			return;
		}
		lg_conn_send_ref(c, cl->msg.data, cl->msg.len);
		lg_conn_send(c, "\r\n", 2);
		lg_conn_arm(c);
		cl->st = MIX_APPEND_DATA;
		return;
	}
	r = lg_imap_tagged(c, s, n);
	if (r == LG_NOT_TAGGED)
		return;
	if (r == LG_NO && (cl->st == MIX_FETCH_FLAGS || cl->st == MIX_FETCH_BODY ||
	                   cl->st == MIX_STORE)) {
		/* Clients sharing a user expunge each other's appended
		 * messages; a server may answer NO for a message expunged
		 * since (RFC 2180 §4.1.2).  Counted, and the session goes on. */
		lg_error("imap-mix client %d (%s), %s: %s", cl->index, lg.users[cl->user],
		         mix_names[cl->st], lg_excerpt(s, n));
		c->op = NULL;
		lg_conn_done(c);
		mix_next(cl, s, n);
		return;
	}
	if (r != LG_OK) {
		lg_conn_fail(c, "%s", lg_excerpt(s, n));
		return;
	}
	lg_conn_done(c);
	mix_next(cl, s, n);
}

static void mix_closed(lg_conn *c, const char *why)
{
	struct mix_client *cl = c->owner;

	cl->active = false;
	if (why != NULL) {
		if (!lg.stopping)
			lg_error("imap-mix client %d (%s), %s: %s", cl->index, lg.users[cl->user],
			         mix_names[cl->st], why);
		if (!cl->ever_ok && !cl->counted_first) {
			cl->counted_first = true;
			lg_first_failure();
		}
	}
	if (lg.draining || lg.stopping) {
		mix_retire(cl);
		mix_check_end();
		return;
	}
	if (why != NULL) {
		cl->restart_at = lg_now() + 100000000u;
		return;
	}
	mix_begin(cl);
}

static int mix_start(void)
{
	int i;

	ms.login = lg_stat_new("LOGIN", true);
	ms.select = lg_stat_new("SELECT", true);
	ms.fetch_flags = lg_stat_new("FETCH_FLAGS", true);
	ms.fetch_body = lg_stat_new("FETCH_BODY", true);
	ms.store = lg_stat_new("STORE", true);
	ms.append = lg_stat_new("APPEND", true);
	ms.uid_store = lg_stat_new("UID_STORE", true);
	ms.expunge = lg_stat_new("EXPUNGE", true);
	ms.logout = lg_stat_new("LOGOUT", true);
	ms.session = lg_stat_new("SESSION", false);

	mclients = calloc((size_t)lg.o.clients, sizeof *mclients);
	if (mclients == NULL)
		return -1;
	nmclients = lg.o.clients;
	for (i = 0; i < nmclients; i++) {
		struct mix_client *cl = &mclients[i];

		if (lg_conn_init(&cl->c, 16384, true, mix_line, mix_closed, cl, i) != 0 ||
		    lg_msg_init(&cl->msg, MIX_APPEND_SIZE, lg.o.seed + (uint64_t)i) != 0)
			return -1;
		cl->index = i;
		cl->user = i % lg.o.users;
		cl->rng = lg.o.seed * 1000003u + (uint64_t)i + 1;
		cl->set_seen = (i & 1) == 0;
		mix_live++;
	}
	for (i = 0; i < nmclients; i++)
		mix_begin(&mclients[i]);
	return 0;
}

static void mix_tick(uint64_t now)
{
	int i;

	for (i = 0; i < nmclients; i++) {
		struct mix_client *cl = &mclients[i];

		if (cl->active || cl->done || cl->restart_at == 0 || now < cl->restart_at)
			continue;
		if (lg.draining) {
			mix_retire(cl);
			continue;
		}
		mix_begin(cl);
	}
	mix_check_end();
}

static void mix_stop(void)
{
	int i;

	lg_conn_close_all();
	for (i = 0; i < nmclients; i++)
		if (!mclients[i].active)
			mix_retire(&mclients[i]);
	mix_check_end();
}

static void mix_cleanup(void)
{
	int i;

	if (mclients == NULL)
		return;
	for (i = 0; i < nmclients; i++) {
		lg_conn_free(&mclients[i].c);
		lg_msg_free(&mclients[i].msg);
	}
	free(mclients);
	mclients = NULL;
}

const struct lg_mode lg_mode_imap_mix = {
	.name = "imap-mix",
	.start = mix_start,
	.tick = mix_tick,
	.stop = mix_stop,
	.report = NULL,
	.cleanup = mix_cleanup,
};
