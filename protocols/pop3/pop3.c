/*
 * pop3.c - the POP3 front-end (RFC 1939, with CAPA/RESP-CODES from RFC 2449,
 * STLS from RFC 2595, AUTH from RFC 5034 (the mechanisms are protocols/sasl.c)
 * and the [SYS/TEMP], [SYS/PERM] and [AUTH] codes of RFC 3206).
 *
 * A session is an explicit state machine (enum pop3_state) over one
 * connection.  At login it takes a snapshot of the user's INBOX (UIDs and
 * sizes of the messages without \Deleted) in one short read transaction and
 * numbers messages from it for the whole session; bodies are read later in
 * short transactions, slice by slice.  DELE and RETR only mark the snapshot;
 * QUIT turns the marks into one atomic store request (DESIGN.md section 2,
 * pop3.delete_mode).  Commands are dispatched from a table; each command is
 * one static pop3_cmd_* function.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "protocols/proto.h"
#include "protocols/sasl.h"
#include "protocols/uidcache.h"

/* RFC 2449 section 4 allows 40-character arguments; be tolerant but bounded. */
#define POP3_MAX_ARG 255
#define POP3_MAX_USER 255
#define POP3_MAX_PASS 1024
/* Bytes of a body copied per read transaction while streaming RETR/TOP. */
#define POP3_SLICE (64 * 1024)
#define POP3_UIDL_LEN 24

/*
 * RFC 1939 section 3: AUTHORIZATION -> TRANSACTION -> UPDATE.  The other
 * states are the asynchronous waits between them; input is paused in each
 * of them, so no command arrives there.
 */
enum pop3_state {
	POP3_AUTHORIZATION, /* greeting sent; USER/PASS/STLS/CAPA/QUIT */
	POP3_AUTH_CHECKING, /* PASS sent to conn_auth_password, waiting */
	POP3_TRANSACTION,   /* mailbox snapshot taken; commands act on it */
	POP3_STREAMING,     /* a multi-line answer (RETR, TOP, LIST, UIDL) is
	                     * being produced as the output queue drains */
	POP3_UPDATE,        /* QUIT: the store request is being committed */
	POP3_CLOSING,       /* conn_close called; waiting for ops->close */
	POP3_SASL,          /* AUTH sent a "+ " challenge: the next line answers it */
};

#define ST_AUTH (1u << POP3_AUTHORIZATION)
#define ST_TRANS (1u << POP3_TRANSACTION)

/* Per-message marks of the session, kept beside the snapshot. */
enum { MARK_DELE = 1u << 0, MARK_RETR = 1u << 1 };

enum pop3_output_kind { POP3_OUT_LIST, POP3_OUT_UIDL, POP3_OUT_BODY };

/* The multi-line answer in progress (state POP3_STREAMING). */
struct pop3_output {
	enum pop3_output_kind kind;
	uint32_t next;          /* LIST/UIDL: next snapshot index */
	uint32_t index;         /* BODY: snapshot index of the message */
	bool retr;              /* BODY: RETR (marks the message) or TOP */
	uint8_t body_id[32];
	size_t off;             /* next body octet to send */
	size_t end;             /* body size */
	size_t header_end;      /* TOP: end of the header phase */
	bool in_header;         /* TOP: still sending the header */
	bool count_lines;       /* TOP: stop after lines_left body lines */
	uint64_t lines_left;
	bool bol;               /* the output is at the start of a line */
	bool line_nonblank;     /* the current line has a byte other than CR */
	bool prev_blank;        /* the last finished line was empty */
};

struct pop3_session {
	conn *c;
	const struct proto_settings *set;
	enum pop3_state state;
	bool paused;            /* we called conn_pause and owe a resume */

	/* AUTHORIZATION: the name given with USER, NULL before. */
	char *user;

	/* TRANSACTION: the snapshot, taken at login. */
	uint32_t user_id;
	uint32_t mailbox_id;
	uint32_t uidvalidity;
	/* UIDs and sizes, ascending; bodies are looked up by UID when
	 * needed.  Often shared with the list cache (protocols/uidcache.h),
	 * which is why it is never changed. */
	struct uid_list *snap;
	uint8_t *marks;         /* MARK_* per message */
	uint32_t count;         /* messages in the snapshot */
	uint32_t live_count;    /* not DELE'd */
	uint64_t live_bytes;
	uint32_t dele_count;

	/* pop3.lock_session: membership in the process-wide lock list. */
	bool locked;
	struct pop3_session *lock_next, *lock_prev;

	struct pop3_output out;

	sasl *sasl;             /* the AUTH exchange in progress, or NULL */
};

/* A parsed command line. */
struct pop3_args {
	unsigned n;
	char *v[2];
	size_t len[2];
};

struct pop3_cmd {
	const char *name;
	void (*fn)(struct pop3_session *s, struct pop3_args *a);
	unsigned states;        /* ST_* where the command is valid */
	uint8_t min_args, max_args;
	bool raw_arg;           /* the rest of the line is one argument (USER, PASS) */
	const char *usage;
};

/* ------------------------------------------------------- mailbox locks */

/*
 * Mailboxes held by a POP3 session of this process with
 * pop3.lock_session (RFC 1939 section 8 / RFC 2449 [IN-USE]).  Touched
 * only on the loop thread.  A list: POP3 sessions are short and few next to
 * IMAP ones, and a lookup happens once per login.
 */
static struct pop3_session *pop3_locks;

static bool pop3_mailbox_locked(uint32_t mailbox_id)
{
	for (const struct pop3_session *l = pop3_locks; l; l = l->lock_next)
		if (l->mailbox_id == mailbox_id)
			return true;
	return false;
}

static void pop3_lock(struct pop3_session *s)
{
	s->lock_prev = NULL;
	s->lock_next = pop3_locks;
	if (pop3_locks)
		pop3_locks->lock_prev = s;
	pop3_locks = s;
	s->locked = true;
}

static void pop3_unlock(struct pop3_session *s)
{
	if (!s->locked)
		return;
	if (s->lock_prev)
		s->lock_prev->lock_next = s->lock_next;
	else
		pop3_locks = s->lock_next;
	if (s->lock_next)
		s->lock_next->lock_prev = s->lock_prev;
	s->lock_next = s->lock_prev = NULL;
	s->locked = false;
}

/* ------------------------------------------------------------- helpers */

static const char *pop3_hostname(const struct pop3_session *s)
{
	return s->set->hostname && *s->set->hostname ? s->set->hostname : "localhost";
}

static void pop3_forget_user(struct pop3_session *s)
{
	if (!s->user)
		return;
	explicit_bzero(s->user, strlen(s->user));
	free(s->user);
	s->user = NULL;
}

static void pop3_free_snapshot(struct pop3_session *s)
{
	uid_list_put(s->snap);
	free(s->marks);
	s->snap = NULL;
	s->marks = NULL;
	s->count = s->live_count = s->dele_count = 0;
	s->live_bytes = 0;
}

static void pop3_pause(struct pop3_session *s)
{
	if (!s->paused) {
		conn_pause(s->c);
		s->paused = true;
	}
}

static void pop3_resume(struct pop3_session *s)
{
	if (s->paused) {
		s->paused = false;
		conn_resume(s->c);
	}
}

static bool pop3_plaintext_ok(const struct pop3_session *s)
{
	return conn_is_tls(s->c) || s->set->allow_plaintext;
}

/* UIDL strings (RFC 1939 section 7: 1-70 printable characters).  The forms
 * are those the named servers emit, so migrated clients keep their state;
 * docs/pop3.md lists them. */
static void pop3_uidl(const struct pop3_session *s, uint32_t uid, char *buf, size_t len)
{
	uint32_t v = s->uidvalidity;

	switch (s->set->pop3_uidl_format) {
	case POP3_UIDL_CYRUS:
		snprintf(buf, len, "%" PRIu32 ".%" PRIu32, v, uid);
		break;
	case POP3_UIDL_COURIER:
		snprintf(buf, len, "%" PRIu32 "-%" PRIu32, v, uid);
		break;
	case POP3_UIDL_UW:
		snprintf(buf, len, "%08" PRIx32 "%08" PRIx32, v, uid);
		break;
	case POP3_UIDL_DOVECOT:
	default:
		snprintf(buf, len, "%08" PRIX32 "%08" PRIX32, uid, v);
		break;
	}
}

/* Parse an unsigned decimal number (digits only: no sign, no space).
 * Values past UINT64_MAX clamp, so any long run of digits stays harmless:
 * a message number then fails the range check, a TOP count means "all". */
static bool pop3_parse_u64(const char *p, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		unsigned d = (unsigned)(p[i] - '0');
		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
	}
	*out = v;
	return true;
}

/*
 * Resolve a message-number argument to a snapshot index, or answer -ERR
 * and return false.  RFC 1939 section 5: a number may not refer to a
 * message marked as deleted.
 */
static bool pop3_msgno(struct pop3_session *s, const struct pop3_args *a, unsigned i,
                       uint32_t *idx)
{
	uint64_t n;

	if (!pop3_parse_u64(a->v[i], a->len[i], &n)) {
		conn_puts(s->c, "-ERR invalid message number\r\n");
		return false;
	}
	if (n == 0 || n > s->count) {
		conn_puts(s->c, "-ERR no such message\r\n");
		return false;
	}
	if (s->marks[n - 1] & MARK_DELE) {
		conn_printf(s->c, "-ERR message %" PRIu64 " already deleted\r\n", n);
		return false;
	}
	*idx = (uint32_t)(n - 1);
	return true;
}

/* --------------------------------------------------------- the snapshot */

/*
 * Open the user's INBOX: one short read transaction for the mailbox record
 * and the message list, then it ends (DESIGN section 2: never hold a
 * reader for the session's life).  Answers -ERR itself on failure.
 */
static bool pop3_open_mailbox(struct pop3_session *s)
{
	store_txn *t = store_read_begin(conn_store(s->c));
	struct store_mailbox mb;
	int rc;

	if (!t) {
		conn_log(s->c, LOGL_ERR, "pop3: cannot begin a read transaction");
		conn_puts(s->c, "-ERR [SYS/TEMP] Mailbox unavailable, try later\r\n");
		return false;
	}
	rc = store_mailbox_get(t, s->user_id, "INBOX", &mb);
	if (rc != STORE_OK) {
		store_read_end(t);
		conn_log(s->c, LOGL_ERR, "pop3: INBOX: %s", store_strerror(rc));
		if (rc == STORE_NOTFOUND)
			conn_puts(s->c, "-ERR [SYS/PERM] No INBOX for this user\r\n");
		else
			conn_puts(s->c, "-ERR [SYS/TEMP] Mailbox unavailable, try later\r\n");
		return false;
	}
	if (s->set->pop3_lock_session && pop3_mailbox_locked(mb.id)) {
		store_read_end(t);
		conn_puts(s->c, "-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n");
		return false;
	}
	s->mailbox_id = mb.id;
	s->uidvalidity = mb.uidvalidity;
	/* DESIGN section 2: \Deleted messages are hidden from POP3.  With none
	 * in the mailbox the snapshot is its whole list, which the cache
	 * usually has; otherwise the records are read, the flagged left out. */
	if (mb.deleted == 0) {
		s->snap = uid_cache_open(t, &mb, NULL, &rc);
	} else {
		uint32_t expect = mb.deleted < mb.messages ? mb.messages - mb.deleted : 0;
		s->snap = uid_list_read(t, mb.id, STORE_F_DELETED, expect, NULL, &rc);
	}
	store_read_end(t);
	if (!s->snap) {
		conn_log(s->c, LOGL_ERR, "pop3: INBOX listing: %s", store_strerror(rc));
		conn_puts(s->c, "-ERR [SYS/TEMP] Mailbox unavailable, try later\r\n");
		return false;
	}
	s->count = s->snap->count;
	s->live_bytes = s->snap->bytes;
	s->marks = calloc(s->count ? s->count : 1, 1);
	if (!s->marks) {
		pop3_free_snapshot(s);
		conn_puts(s->c, "-ERR [SYS/TEMP] Mailbox unavailable, try later\r\n");
		return false;
	}
	s->live_count = s->count;
	if (s->set->pop3_lock_session)
		pop3_lock(s);
	return true;
}

/*
 * A login succeeded, by USER/PASS or by SASL AUTH (RFC 5034): open the
 * mailbox and enter TRANSACTION.
 */
static void pop3_login(struct pop3_session *s, const char *user, uint32_t user_id)
{
	conn_set_user(s->c, user);
	s->user_id = user_id;
	if (!pop3_open_mailbox(s)) {
		s->state = POP3_AUTHORIZATION;
		return;
	}
	s->state = POP3_TRANSACTION;
	conn_set_timeout(s->c, conn_idle_timeout(s->c));
	conn_log(s->c, LOGL_INFO, "pop3 login: %" PRIu32 " messages, %" PRIu64 " octets",
	         s->count, s->live_bytes);
	conn_printf(s->c, "+OK Logged in, %" PRIu32 " messages (%" PRIu64 " octets)\r\n",
	            s->live_count, s->live_bytes);
}

static void pop3_auth_done(conn *c, void *sess, bool ok, const char *user, uint32_t user_id)
{
	struct pop3_session *s = sess;

	if (conn_closed(c))
		return;
	/* RFC 1939 section 7: after a failed PASS, USER must be given again. */
	pop3_forget_user(s);
	if (!ok) {
		s->state = POP3_AUTHORIZATION;
		conn_puts(c, "-ERR [AUTH] Authentication failed\r\n");
	} else {
		pop3_login(s, user, user_id);
	}
	pop3_resume(s);
}

/* ------------------------------------------------- multi-line answers */

/*
 * Write LEN body bytes, dot-stuffing lines that begin with '.' (RFC 1939
 * section 3).  With count_lines, stop after the body line that uses up
 * lines_left.  Returns the bytes consumed.
 */
static size_t pop3_emit(struct pop3_session *s, const char *p, size_t len)
{
	struct pop3_output *o = &s->out;
	size_t used = 0;

	while (used < len) {
		const char *q = p + used;
		size_t n = len - used;
		const char *nl = memchr(q, '\n', n);
		size_t seg = nl ? (size_t)(nl - q) + 1 : n;
		size_t text = nl ? seg - 1 : seg;

		if (o->bol && *q == '.')
			conn_write(s->c, ".", 1);
		conn_write(s->c, q, seg);
		used += seg;
		for (size_t i = 0; i < text && !o->line_nonblank; i++)
			o->line_nonblank = q[i] != '\r';
		o->bol = nl != NULL;
		if (!nl)
			break;
		o->prev_blank = !o->line_nonblank;
		o->line_nonblank = false;
		if (o->count_lines && !o->in_header && --o->lines_left == 0)
			break;
	}
	return used;
}

/* End a partial last line, so that the terminating ".\r\n" stands alone. */
static void pop3_end_line(struct pop3_session *s)
{
	if (!s->out.bol) {
		conn_write(s->c, "\r\n", 2);
		s->out.bol = true;
		s->out.prev_blank = !s->out.line_nonblank;
		s->out.line_nonblank = false;
	}
}

/* Produce body slices until done (true), congested (false), or a store
 * failure, which closes the connection: a multi-line answer cannot turn
 * into -ERR halfway, and a cut message must not look complete. */
static bool pop3_pump_body(struct pop3_session *s, bool *failed)
{
	struct pop3_output *o = &s->out;

	while (!conn_congested(s->c)) {
		store_txn *t = store_read_begin(conn_store(s->c));
		const char *data;
		size_t len, budget = POP3_SLICE;
		bool done = false;
		int rc;

		if (!t) {
			conn_log(s->c, LOGL_ERR, "pop3: read transaction failed while streaming");
			*failed = true;
			return false;
		}
		rc = store_body_get(t, o->body_id, &data, &len);
		if (rc != STORE_OK) {
			store_read_end(t);
			conn_log(s->c, LOGL_ERR, "pop3: body of uid %" PRIu32 " unreadable: %s",
			         s->snap->uids[o->index], store_strerror(rc));
			*failed = true;
			return false;
		}
		if (o->end > len)
			o->end = len;
		if (o->header_end > o->end)
			o->header_end = o->end;
		while (budget > 0 && !done) {
			if (o->in_header) {
				size_t lim = o->header_end - o->off < budget ? o->header_end
				                                             : o->off + budget;
				size_t n = pop3_emit(s, data + o->off, lim - o->off);
				o->off += n;
				budget -= n;
				if (o->off < o->header_end)
					continue;
				/* RFC 1939 TOP: the headers, the blank line, then
				 * lines; supply the blank line if the message has none. */
				pop3_end_line(s);
				if (!o->prev_blank) {
					conn_write(s->c, "\r\n", 2);
					o->prev_blank = true;
				}
				o->in_header = false;
				done = o->count_lines && o->lines_left == 0;
			} else {
				size_t lim = o->end - o->off < budget ? o->end : o->off + budget;
				size_t n = pop3_emit(s, data + o->off, lim - o->off);
				o->off += n;
				budget -= n;
				done = o->off == o->end || (o->count_lines && o->lines_left == 0);
			}
		}
		store_read_end(t);
		if (done) {
			pop3_end_line(s);
			return true;
		}
	}
	return false;
}

/* LIST/UIDL without argument: one line per message not DELE'd. */
static bool pop3_pump_listing(struct pop3_session *s)
{
	struct pop3_output *o = &s->out;
	char uidl[POP3_UIDL_LEN];

	while (o->next < s->count) {
		if (conn_congested(s->c))
			return false;
		uint32_t i = o->next++;
		if (s->marks[i] & MARK_DELE)
			continue;
		if (o->kind == POP3_OUT_LIST) {
			conn_printf(s->c, "%" PRIu32 " %" PRIu32 "\r\n", i + 1, s->snap->sizes[i]);
		} else {
			pop3_uidl(s, s->snap->uids[i], uidl, sizeof uidl);
			conn_printf(s->c, "%" PRIu32 " %s\r\n", i + 1, uidl);
		}
	}
	return true;
}

/*
 * Continue the multi-line answer in progress.  Called when it starts and
 * from ops->drained.  Input stays paused until it is finished, so pipelined
 * commands (RFC 2449 PIPELINING) are answered in order.
 */
static void pop3_pump(struct pop3_session *s)
{
	bool failed = false, done;

	if (s->out.kind == POP3_OUT_BODY)
		done = pop3_pump_body(s, &failed);
	else
		done = pop3_pump_listing(s);
	if (failed) {
		s->state = POP3_CLOSING;
		conn_close(s->c);
		return;
	}
	if (!done) {
		pop3_pause(s);
		return;
	}
	conn_puts(s->c, ".\r\n");
	if (s->out.kind == POP3_OUT_BODY && s->out.retr)
		s->marks[s->out.index] |= MARK_RETR;
	s->state = POP3_TRANSACTION;
	pop3_resume(s);
}

static void pop3_start_output(struct pop3_session *s, enum pop3_output_kind kind)
{
	memset(&s->out, 0, sizeof s->out);
	s->out.kind = kind;
	s->out.bol = true;
	s->state = POP3_STREAMING;
}

/* ------------------------------------------------------------ commands */

static void pop3_cmd_capa(struct pop3_session *s, struct pop3_args *a)
{
	conn *c = s->c;

	/* RFC 2449 section 5; STLS per RFC 2595 section 4; AUTH-RESP-CODE
	 * per RFC 3206 section 6. */
	conn_puts(c, "+OK Capability list follows\r\n"
	             "TOP\r\n"
	             "UIDL\r\n"
	             "RESP-CODES\r\n"
	             "AUTH-RESP-CODE\r\n"
	             "PIPELINING\r\n");
	if (s->state == POP3_AUTHORIZATION) {
		char mechs[128];
		if (pop3_plaintext_ok(s))
			conn_puts(c, "USER\r\n");
		/* RFC 5034 section 5: the mechanisms this connection may use. */
		sasl_mech_list(c, " ", "", mechs, sizeof mechs);
		conn_printf(c, "SASL%s\r\n", mechs);
		if (conn_tls_available(c) && !conn_is_tls(c))
			conn_puts(c, "STLS\r\n");
	}
	conn_puts(c, "IMPLEMENTATION onebox\r\n.\r\n");
}

static void pop3_cmd_user(struct pop3_session *s, struct pop3_args *a)
{
	size_t len = a->len[0];

	if (!pop3_plaintext_ok(s)) {
		/* Say why, and what would work (RFC 3206 section 4 [AUTH]). */
		if (conn_tls_available(s->c))
			conn_puts(s->c, "-ERR [AUTH] Plaintext authentication disallowed on "
			                "non-secure (no TLS) connection; use STLS\r\n");
		else
			conn_puts(s->c, "-ERR [AUTH] Plaintext authentication disallowed on "
			                "non-secure (no TLS) connection\r\n");
		return;
	}
	while (len > 0 && a->v[0][len - 1] == ' ')
		len--;
	if (len == 0 || len > POP3_MAX_USER) {
		conn_puts(s->c, "-ERR invalid user name\r\n");
		return;
	}
	pop3_forget_user(s);
	s->user = strndup(a->v[0], len);
	if (!s->user) {
		conn_puts(s->c, "-ERR [SYS/TEMP] Out of memory\r\n");
		return;
	}
	conn_puts(s->c, "+OK Send your password\r\n");
}

static void pop3_cmd_pass(struct pop3_session *s, struct pop3_args *a)
{
	char *pass = a->v[0];
	size_t len = a->len[0];

	if (!s->user || !pop3_plaintext_ok(s)) {
		explicit_bzero(pass, len);
		conn_puts(s->c, "-ERR USER first\r\n");
		return;
	}
	if (len > POP3_MAX_PASS) {
		explicit_bzero(pass, len);
		pop3_forget_user(s);
		conn_puts(s->c, "-ERR [AUTH] Authentication failed\r\n");
		return;
	}
	s->state = POP3_AUTH_CHECKING;
	pop3_pause(s);
	/* The password is copied by conn_auth_password; wipe the line. */
	conn_auth_password(s->c, s->user, pass, pop3_auth_done);
	explicit_bzero(pass, len);
}

static void pop3_cmd_stls(struct pop3_session *s, struct pop3_args *a)
{
	if (conn_is_tls(s->c)) {
		conn_puts(s->c, "-ERR TLS is already active\r\n");
		return;
	}
	if (!conn_tls_available(s->c)) {
		conn_puts(s->c, "-ERR STLS not available\r\n");
		return;
	}
	if (s->user) {
		conn_puts(s->c, "-ERR STLS must come before USER\r\n");
		return;
	}
	conn_puts(s->c, "+OK Begin TLS negotiation\r\n");
	if (conn_starttls(s->c) != 0) {
		conn_log(s->c, LOGL_ERR, "pop3: STLS failed to start");
		s->state = POP3_CLOSING;
		conn_close(s->c);
		return;
	}
	/* RFC 2595 section 4: forget everything learnt in clear. */
	pop3_forget_user(s);
	s->state = POP3_AUTHORIZATION;
}

/* ---------------------------------------------------------------- AUTH */

static void pop3_sasl_end(struct pop3_session *s)
{
	sasl_free(s->sasl);
	s->sasl = NULL;
	if (s->state == POP3_SASL || s->state == POP3_AUTH_CHECKING)
		s->state = POP3_AUTHORIZATION;
}

/* Act on a step of the exchange (protocols/sasl.h; RFC 5034 section 4). */
static void pop3_sasl_outcome(struct pop3_session *s, enum sasl_status st)
{
	char user[256];
	uint32_t id;

	switch (st) {
	case SASL_CONTINUE: {
		char *b64 = sasl_challenge_b64(s->sasl);
		if (!b64) {
			pop3_sasl_end(s);
			conn_puts(s->c, "-ERR [SYS/TEMP] Out of memory\r\n");
			break;
		}
		conn_printf(s->c, "+ %s\r\n", b64);
		free(b64);
		s->state = POP3_SASL;
		break;
	}
	case SASL_PENDING:
		s->state = POP3_AUTH_CHECKING;
		pop3_pause(s);
		return;
	case SASL_SUCCESS:
		snprintf(user, sizeof user, "%s", sasl_user(s->sasl));
		id = sasl_user_id(s->sasl);
		pop3_sasl_end(s);
		pop3_login(s, user, id);
		break;
	case SASL_FAILED:
		pop3_sasl_end(s);
		conn_puts(s->c, "-ERR [AUTH] Authentication failed\r\n");
		break;
	case SASL_NOT_PERMITTED:
		pop3_sasl_end(s);
		conn_puts(s->c, "-ERR [AUTH] Authorization identity not permitted\r\n");
		break;
	case SASL_MALFORMED:
		pop3_sasl_end(s);
		conn_puts(s->c, "-ERR Malformed SASL response\r\n");
		break;
	case SASL_BAD_BASE64:
		pop3_sasl_end(s);
		conn_puts(s->c, "-ERR Invalid base64 in the SASL response\r\n");
		break;
	}
	pop3_resume(s);
}

static void pop3_sasl_cb(sasl *x, void *arg, enum sasl_status st)
{
	struct pop3_session *s = arg;

	if (!conn_closed(s->c))
		pop3_sasl_outcome(s, st);
}

/* One base64 client message; "=" alone is an empty initial response
 * (RFC 5034 section 4), an empty line an empty continuation. */
static void pop3_sasl_data(struct pop3_session *s, const char *b64, size_t len)
{
	pop3_sasl_outcome(s, sasl_step_b64(s->sasl, b64, len));
}

static void pop3_sasl_line(struct pop3_session *s, char *line, size_t len)
{
	s->state = POP3_AUTHORIZATION;
	if (len == 1 && line[0] == '*') {
		pop3_sasl_end(s);
		conn_puts(s->c, "-ERR Authentication cancelled\r\n");
		return;
	}
	pop3_sasl_data(s, line, len);
	explicit_bzero(line, len);
}

static void pop3_cmd_auth(struct pop3_session *s, struct pop3_args *a)
{
	char mechs[128], mech[32];
	const char *p = a->n ? a->v[0] : "", *ir;
	size_t mlen;

	if (a->n == 0) {
		/* No argument: list the mechanisms, as RFC 1734 clients expect. */
		sasl_mech_list(s->c, "", "\r\n", mechs, sizeof mechs);
		conn_printf(s->c, "+OK SASL mechanisms follow\r\n%s.\r\n", mechs);
		return;
	}
	mlen = strcspn(p, " ");
	ir = p[mlen] == ' ' ? p + mlen + 1 : NULL;
	if (mlen == 0 || mlen >= sizeof mech || (ir && strchr(ir, ' '))) {
		conn_puts(s->c, "-ERR usage: AUTH mechanism [initial-response]\r\n");
		return;
	}
	memcpy(mech, p, mlen);
	mech[mlen] = '\0';
	switch (sasl_mech_usable(s->c, mech)) {
	case SASL_MECH_UNKNOWN:
		conn_puts(s->c, "-ERR Unsupported authentication mechanism\r\n");
		return;
	case SASL_MECH_NEEDS_TLS:
		conn_puts(s->c, "-ERR [AUTH] Plaintext authentication disallowed on "
		                "non-secure (no TLS) connection\r\n");
		return;
	case SASL_MECH_OK:
		break;
	}
	pop3_forget_user(s);
	s->sasl = sasl_new(s->c, mech, pop3_sasl_cb, s);
	if (!s->sasl) {
		conn_puts(s->c, "-ERR [SYS/TEMP] Out of memory\r\n");
		return;
	}
	if (ir)
		pop3_sasl_data(s, ir, strcmp(ir, "=") == 0 ? 0 : strlen(ir));
	else
		pop3_sasl_outcome(s, sasl_step(s->sasl, NULL, 0, false));
}

static void pop3_cmd_stat(struct pop3_session *s, struct pop3_args *a)
{
	conn_printf(s->c, "+OK %" PRIu32 " %" PRIu64 "\r\n", s->live_count, s->live_bytes);
}

static void pop3_cmd_list(struct pop3_session *s, struct pop3_args *a)
{
	uint32_t i;

	if (a->n == 1) {
		if (pop3_msgno(s, a, 0, &i))
			conn_printf(s->c, "+OK %" PRIu32 " %" PRIu32 "\r\n", i + 1, s->snap->sizes[i]);
		return;
	}
	conn_printf(s->c, "+OK %" PRIu32 " messages (%" PRIu64 " octets)\r\n", s->live_count,
	            s->live_bytes);
	pop3_start_output(s, POP3_OUT_LIST);
	pop3_pump(s);
}

static void pop3_cmd_uidl(struct pop3_session *s, struct pop3_args *a)
{
	char uidl[POP3_UIDL_LEN];
	uint32_t i;

	if (a->n == 1) {
		if (pop3_msgno(s, a, 0, &i)) {
			pop3_uidl(s, s->snap->uids[i], uidl, sizeof uidl);
			conn_printf(s->c, "+OK %" PRIu32 " %s\r\n", i + 1, uidl);
		}
		return;
	}
	conn_puts(s->c, "+OK Unique-ID listing follows\r\n");
	pop3_start_output(s, POP3_OUT_UIDL);
	pop3_pump(s);
}

/* RETR and TOP: look the message up by UID now; an IMAP client may have
 * expunged it since the snapshot (DESIGN section 2). */
static void pop3_send_message(struct pop3_session *s, uint32_t i, bool retr, uint64_t lines)
{
	store_txn *t = store_read_begin(conn_store(s->c));
	struct store_message m;
	int rc;

	if (!t) {
		conn_puts(s->c, "-ERR [SYS/TEMP] Cannot read the mailbox, try later\r\n");
		return;
	}
	rc = store_message_get(t, s->mailbox_id, s->snap->uids[i], &m);
	store_read_end(t);
	if (rc == STORE_NOTFOUND) {
		conn_printf(s->c, "-ERR message %" PRIu32 " was expunged by another session\r\n",
		            i + 1);
		return;
	}
	if (rc != STORE_OK) {
		conn_log(s->c, LOGL_ERR, "pop3: uid %" PRIu32 ": %s", s->snap->uids[i],
		         store_strerror(rc));
		conn_puts(s->c, "-ERR [SYS/TEMP] Cannot read the message, try later\r\n");
		return;
	}
	if (retr)
		conn_printf(s->c, "+OK %" PRIu32 " octets\r\n", m.size);
	else
		conn_puts(s->c, "+OK Top of message follows\r\n");
	pop3_start_output(s, POP3_OUT_BODY);
	s->out.index = i;
	s->out.retr = retr;
	memcpy(s->out.body_id, m.body_id, sizeof s->out.body_id);
	s->out.end = m.size;
	if (!retr) {
		s->out.in_header = true;
		s->out.header_end = m.header_size;
		s->out.count_lines = true;
		s->out.lines_left = lines;
	}
	pop3_pump(s);
}

static void pop3_cmd_retr(struct pop3_session *s, struct pop3_args *a)
{
	uint32_t i;

	if (pop3_msgno(s, a, 0, &i))
		pop3_send_message(s, i, true, 0);
}

static void pop3_cmd_top(struct pop3_session *s, struct pop3_args *a)
{
	uint64_t lines;
	uint32_t i;

	if (!pop3_msgno(s, a, 0, &i))
		return;
	if (!pop3_parse_u64(a->v[1], a->len[1], &lines)) {
		conn_puts(s->c, "-ERR invalid number of lines\r\n");
		return;
	}
	pop3_send_message(s, i, false, lines);
}

static void pop3_cmd_dele(struct pop3_session *s, struct pop3_args *a)
{
	uint32_t i;

	if (!pop3_msgno(s, a, 0, &i))
		return;
	s->marks[i] |= MARK_DELE;
	s->live_count--;
	s->live_bytes -= s->snap->sizes[i];
	s->dele_count++;
	conn_printf(s->c, "+OK message %" PRIu32 " deleted\r\n", i + 1);
}

static void pop3_cmd_noop(struct pop3_session *s, struct pop3_args *a)
{
	conn_puts(s->c, "+OK\r\n");
}

/* RFC 1939 section 5: RSET unmarks deleted messages.  RETR marks stay: the
 * client did read those messages (docs/pop3.md). */
static void pop3_cmd_rset(struct pop3_session *s, struct pop3_args *a)
{
	for (uint32_t i = 0; i < s->count; i++) {
		if (s->marks[i] & MARK_DELE) {
			s->marks[i] &= (uint8_t)~MARK_DELE;
			s->live_count++;
			s->live_bytes += s->snap->sizes[i];
		}
	}
	s->dele_count = 0;
	conn_printf(s->c, "+OK maildrop has %" PRIu32 " messages (%" PRIu64 " octets)\r\n",
	            s->live_count, s->live_bytes);
}

static void pop3_signoff(struct pop3_session *s)
{
	conn_printf(s->c, "+OK %s POP3 server signing off (%" PRIu32 " messages deleted)\r\n",
	            pop3_hostname(s), s->dele_count);
	s->state = POP3_CLOSING;
	conn_close(s->c);
}

static void pop3_update_done(store_req *r, void *arg)
{
	struct pop3_session *s = arg;
	conn *c = s->c;
	int rc = store_req_status(r);

	pop3_unlock(s);
	if (rc != STORE_OK)
		conn_log(c, LOGL_ERR, "pop3 update failed: %s", store_strerror(rc));
	else
		conn_log(c, LOGL_INFO, "pop3 update: %" PRIu32 " deleted", s->dele_count);
	if (!conn_closed(c)) {
		if (rc == STORE_OK) {
			pop3_signoff(s);
		} else {
			conn_puts(c, "-ERR [SYS/TEMP] some deleted messages not removed\r\n");
			s->state = POP3_CLOSING;
			conn_close(c);
		}
	}
	conn_release(c); /* may free S */
}

/*
 * The destination of DELE'd messages in trash mode, or 0 to expunge them
 * instead.  Returns false on a store failure.
 */
static bool pop3_trash_id(struct pop3_session *s, uint32_t *id)
{
	store_txn *t = store_read_begin(conn_store(s->c));
	struct store_mailbox mb;
	int rc;

	*id = 0;
	if (!t)
		return false;
	rc = store_mailbox_by_use(t, s->user_id, STORE_USE_TRASH, &mb);
	store_read_end(t);
	if (rc == STORE_NOTFOUND || (rc == STORE_OK && mb.id == s->mailbox_id)) {
		conn_log(s->c, LOGL_WARN, "pop3: no Trash mailbox; expunging deleted messages");
		return true;
	}
	if (rc != STORE_OK)
		return false;
	*id = mb.id;
	return true;
}

/*
 * RFC 1939 section 6: QUIT in TRANSACTION enters UPDATE.  Everything the
 * session marked becomes one atomic store request (DESIGN section 2).
 */
static void pop3_cmd_quit(struct pop3_session *s, struct pop3_args *a)
{
	enum pop3_delete_mode mode = s->set->pop3_delete_mode;
	uint32_t trash = 0;
	store_req *r;
	bool any = false;

	if (s->state == POP3_AUTHORIZATION) {
		conn_printf(s->c, "+OK %s POP3 server signing off\r\n", pop3_hostname(s));
		s->state = POP3_CLOSING;
		conn_close(s->c);
		return;
	}
	if (s->dele_count > 0 && mode == POP3_DELETE_TRASH) {
		if (!pop3_trash_id(s, &trash)) {
			conn_puts(s->c, "-ERR [SYS/TEMP] some deleted messages not removed\r\n");
			s->state = POP3_CLOSING;
			conn_close(s->c);
			return;
		}
		if (trash == 0)
			mode = POP3_DELETE_EXPUNGE;
	}
	r = store_req_new();
	for (uint32_t i = 0; i < s->count; i++) {
		uint32_t uid = s->snap->uids[i], add = 0;
		bool dele = s->marks[i] & MARK_DELE;

		if ((s->marks[i] & MARK_RETR) && s->set->pop3_mark_seen)
			add |= STORE_F_SEEN;
		if (dele)
			add |= STORE_F_DELETED;
		if (!add)
			continue;
		/* One flag change per message: \Seen and \Deleted in one modseq. */
		store_req_flags(r, s->mailbox_id, uid, add, 0);
		any = true;
		if (!dele)
			continue;
		/* Only the DELE'd UIDs: never a plain expunge of every \Deleted. */
		if (mode == POP3_DELETE_EXPUNGE)
			store_req_expunge(r, s->mailbox_id, uid);
		else if (mode == POP3_DELETE_TRASH)
			store_req_move(r, s->mailbox_id, uid, trash, STORE_F_DELETED);
	}
	if (!any) {
		store_req_free(r);
		pop3_unlock(s);
		pop3_signoff(s);
		return;
	}
	s->state = POP3_UPDATE;
	pop3_pause(s);
	conn_hold(s->c);
	store_req_submit(conn_store(s->c), r, pop3_update_done, s);
}

/*
 * The command table (RFC 1939 sections 4-7, RFC 2449, RFC 2595).  AUTH
 * (RFC 5034) slots in here as a ST_AUTH command whose exchange ends in
 * pop3_login().  APOP is not offered: passwords are stored hashed.
 */
static const struct pop3_cmd pop3_cmds[] = {
	{ "CAPA", pop3_cmd_capa, ST_AUTH | ST_TRANS, 0, 0, false, "CAPA" },
	{ "USER", pop3_cmd_user, ST_AUTH, 1, 1, true, "USER name" },
	{ "PASS", pop3_cmd_pass, ST_AUTH, 1, 1, true, "PASS password" },
	{ "STLS", pop3_cmd_stls, ST_AUTH, 0, 0, false, "STLS" },
	{ "AUTH", pop3_cmd_auth, ST_AUTH, 0, 1, true, "AUTH [mechanism [initial-response]]" },
	{ "STAT", pop3_cmd_stat, ST_TRANS, 0, 0, false, "STAT" },
	{ "LIST", pop3_cmd_list, ST_TRANS, 0, 1, false, "LIST [msg]" },
	{ "UIDL", pop3_cmd_uidl, ST_TRANS, 0, 1, false, "UIDL [msg]" },
	{ "RETR", pop3_cmd_retr, ST_TRANS, 1, 1, false, "RETR msg" },
	{ "TOP", pop3_cmd_top, ST_TRANS, 2, 2, false, "TOP msg lines" },
	{ "DELE", pop3_cmd_dele, ST_TRANS, 1, 1, false, "DELE msg" },
	{ "NOOP", pop3_cmd_noop, ST_TRANS, 0, 0, false, "NOOP" },
	{ "RSET", pop3_cmd_rset, ST_TRANS, 0, 0, false, "RSET" },
	{ "QUIT", pop3_cmd_quit, ST_AUTH | ST_TRANS, 0, 0, false, "QUIT" },
};

/* ---------------------------------------------------- parse and dispatch */

static const struct pop3_cmd *pop3_lookup(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof pop3_cmds / sizeof pop3_cmds[0]; i++)
		if (strlen(pop3_cmds[i].name) == len && strncasecmp(pop3_cmds[i].name, name, len) == 0)
			return &pop3_cmds[i];
	return NULL;
}

/*
 * Split the arguments after the keyword.  RFC 1939 separates them with a
 * single space; runs of spaces are tolerated.  A raw-argument command (USER,
 * PASS) takes the rest of the line as is: RFC 1939 section 7 allows spaces
 * in a password.  Returns false if there are too many or too long.
 */
static bool pop3_split(const struct pop3_cmd *cmd, char *p, size_t len, struct pop3_args *a)
{
	size_t i = 0;

	a->n = 0;
	if (cmd->raw_arg) {
		if (len > 0) {
			a->v[0] = p;
			a->len[0] = len;
			a->n = 1;
		}
		return true;
	}
	while (i < len) {
		while (i < len && p[i] == ' ')
			i++;
		if (i == len)
			break;
		size_t start = i;
		while (i < len && p[i] != ' ')
			i++;
		if (a->n == 2 || i - start > POP3_MAX_ARG)
			return false;
		a->v[a->n] = p + start;
		a->len[a->n] = i - start;
		a->n++;
		if (i < len)
			p[i++] = '\0'; /* p[len] is already NUL */
	}
	return true;
}

static void pop3_line(void *sess, char *line, size_t len)
{
	struct pop3_session *s = sess;
	const struct pop3_cmd *cmd;
	struct pop3_args a = { 0 };
	size_t kw = 0;

	if (s->state == POP3_SASL) {
		pop3_sasl_line(s, line, len);
		return;
	}
	if (s->state != POP3_AUTHORIZATION && s->state != POP3_TRANSACTION) {
		/* Input is paused in the other states; nothing should arrive. */
		conn_log(s->c, LOGL_WARN, "pop3: input while busy, dropped");
		return;
	}
	if (memchr(line, '\0', len)) {
		explicit_bzero(line, len);
		conn_puts(s->c, "-ERR NUL byte in command\r\n");
		return;
	}
	while (kw < len && line[kw] != ' ')
		kw++;
	if (kw == 0) {
		conn_puts(s->c, "-ERR empty command\r\n");
		return;
	}
	cmd = pop3_lookup(line, kw);
	if (!cmd) {
		conn_puts(s->c, "-ERR unknown command\r\n");
		return;
	}
	if (!(cmd->states & (1u << s->state))) {
		explicit_bzero(line, len);
		conn_puts(s->c, "-ERR command not valid in this state\r\n");
		return;
	}
	if (!pop3_split(cmd, line + (kw < len ? kw + 1 : len), kw < len ? len - kw - 1 : 0, &a) ||
	    a.n < cmd->min_args || a.n > cmd->max_args) {
		conn_printf(s->c, "-ERR usage: %s\r\n", cmd->usage);
		return;
	}
	cmd->fn(s, &a);
}

/* ---------------------------------------------------------- proto_ops */

static void *pop3_open(conn *c)
{
	struct pop3_session *s = calloc(1, sizeof *s);

	if (!s)
		return NULL;
	s->c = c;
	s->set = conn_settings(c);
	s->state = POP3_AUTHORIZATION;
	/* RFC 1939 section 4.  No APOP timestamp: APOP is not offered. */
	conn_printf(c, "+OK %s POP3 onebox ready\r\n", pop3_hostname(s));
	return s;
}

static size_t pop3_bytes(void *sess, const char *p, size_t len)
{
	return len; /* POP3 never enters bytes mode */
}

static void pop3_line_too_long(void *sess)
{
	struct pop3_session *s = sess;

	if (s->state == POP3_SASL) /* the exchange cannot go on */
		pop3_sasl_end(s);
	conn_puts(s->c, "-ERR line too long\r\n");
}

static void pop3_drained(void *sess)
{
	struct pop3_session *s = sess;

	if (s->state != POP3_STREAMING)
		return;
	/* A client reading a long answer sends nothing; its reading is the
	 * activity that keeps the session alive.  One that stops reading
	 * still times out. */
	conn_set_timeout(s->c, conn_idle_timeout(s->c));
	pop3_pump(s);
}

static void pop3_timeout(void *sess)
{
	struct pop3_session *s = sess;

	/* No UPDATE (RFC 1939 section 3): marks are dropped. */
	if (s->state == POP3_AUTHORIZATION || s->state == POP3_TRANSACTION)
		conn_puts(s->c, "-ERR autologout; idle for too long\r\n");
	s->state = POP3_CLOSING;
}

static void pop3_close(void *sess)
{
	struct pop3_session *s = sess;

	pop3_unlock(s);
	pop3_forget_user(s);
	pop3_free_snapshot(s);
	sasl_free(s->sasl);
	free(s);
}

const struct proto_ops pop3_ops = {
	.name = "pop3",
	.refuse_busy = "-ERR [SYS/TEMP] Too many connections, try later\r\n",
	.open = pop3_open,
	.line = pop3_line,
	.bytes = pop3_bytes,
	.line_too_long = pop3_line_too_long,
	.drained = pop3_drained,
	.timeout = pop3_timeout,
	.close = pop3_close,
};
