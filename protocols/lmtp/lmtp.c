/*
 * lmtp.c - the LMTP front-end (RFC 2033): how an MTA hands mail to onebox.
 *
 * A session is an explicit state machine in the manner of OpenSMTPD's
 * smtp_session.c: the enum below is the protocol, each verb has one
 * lmtp_<verb> function, and a table says which states each verb is allowed
 * in.  Parsing of paths, parameters and the dot-stuffed DATA stream lives in
 * lmtp_parse.c.  After the final ".", one store request per recipient is
 * queued to the store's writer; the replies (one per accepted RCPT, in RCPT
 * order, RFC 2033 section 4.2) are sent only once the group commit holding
 * them is durable.  Messages are stored byte for byte as received.
 */
#include "protocols/proto.h"
#include "protocols/lmtp/lmtp_parse.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum lmtp_state {
	LMTP_S_GREETED,    /* connected; LHLO opens the session */
	LMTP_S_READY,      /* after LHLO, no mail transaction */
	LMTP_S_MAIL,       /* MAIL accepted, no recipient yet */
	LMTP_S_RCPT,       /* at least one recipient accepted */
	LMTP_S_DATA,       /* receiving the message, in bytes mode */
	LMTP_S_DELIVERING, /* store requests in flight, input paused */
};

#define LMTP_IN(st) (1u << (st))
#define LMTP_LINE_STATES                                  \
	(LMTP_IN(LMTP_S_GREETED) | LMTP_IN(LMTP_S_READY) | \
	 LMTP_IN(LMTP_S_MAIL) | LMTP_IN(LMTP_S_RCPT))

/* Used when the config leaves lmtp_max_recipients at 0. */
#define LMTP_DEFAULT_MAX_RCPT 1000
/* Protocol errors (unknown verbs, bad syntax, bad sequence) after which the
 * session is dropped, as Postfix's smtpd_hard_error_limit does. */
#define LMTP_MAX_ERRORS 20

struct lmtp_session;

/* One accepted RCPT: what the client wrote, and whom it reaches. */
struct lmtp_rcpt {
	char *addr;      /* the mailbox as given, for replies and logs */
	size_t delivery; /* index into lmtp_session.deliveries */
};

/* One store user of the transaction; several RCPTs may share it. */
struct lmtp_delivery {
	struct lmtp_session *s;
	char *user; /* the store's canonical user name */
	int status; /* STORE_*, once the request completed */
	uint32_t uid;
};

struct lmtp_session {
	conn *c;
	const struct proto_settings *set;
	const char *hostname;
	enum lmtp_state state;
	unsigned errors;

	/* The mail transaction (RFC 5321 section 3.3). */
	char *sender; /* reverse-path, "" for the null path */
	struct lmtp_rcpt *rcpts;
	size_t nrcpts;
	struct lmtp_delivery *deliveries;
	size_t ndeliveries;

	/* DATA and delivery. */
	struct lmtp_dot_decoder dot;
	store_msg *msg;      /* NULL once dropped for being too big */
	uint64_t data_bytes; /* octets received, dot-stuffing removed */
	size_t msg_size;     /* octets as stored */
	bool too_big;
	size_t pending;      /* store requests in flight (+1 while submitting) */
};

struct lmtp_cmd {
	const char *verb;
	void (*fn)(struct lmtp_session *s, char *args);
	unsigned states; /* LMTP_IN(LMTP_S_*) where the verb is allowed */
};

/* ------------------------------------------------------------- replies */

static void lmtp_vreply(struct lmtp_session *s, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

static void lmtp_vreply(struct lmtp_session *s, const char *fmt, va_list ap)
{
	char *line;
	int n = vasprintf(&line, fmt, ap);

	if (n < 0) {
		conn_puts(s->c, "451 4.3.0 Out of memory\r\n");
		return;
	}
	conn_write(s->c, line, (size_t)n);
	conn_write(s->c, "\r\n", 2);
	free(line);
}

/* Write one reply line; CRLF is added here and nowhere else. */
static void lmtp_reply(struct lmtp_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void lmtp_reply(struct lmtp_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	lmtp_vreply(s, fmt, ap);
	va_end(ap);
}

/* Reply to a protocol error, and drop a client that keeps making them. */
static void lmtp_fail(struct lmtp_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void lmtp_fail(struct lmtp_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	lmtp_vreply(s, fmt, ap);
	va_end(ap);
	if (++s->errors >= LMTP_MAX_ERRORS) {
		lmtp_reply(s, "421 4.7.0 %s Too many errors, closing connection",
		           s->hostname);
		conn_log(s->c, LOGL_INFO, "closed after %u protocol errors", s->errors);
		conn_close(s->c);
	}
}

/* ------------------------------------------------------- transaction */

/* Forget the mail transaction; the LHLO state is kept. */
static void lmtp_reset(struct lmtp_session *s)
{
	for (size_t i = 0; i < s->nrcpts; i++)
		free(s->rcpts[i].addr);
	for (size_t i = 0; i < s->ndeliveries; i++)
		free(s->deliveries[i].user);
	free(s->rcpts);
	free(s->deliveries);
	free(s->sender);
	s->rcpts = NULL;
	s->deliveries = NULL;
	s->sender = NULL;
	s->nrcpts = 0;
	s->ndeliveries = 0;
	if (s->msg != NULL) {
		store_msg_unref(s->msg);
		s->msg = NULL;
	}
	s->data_bytes = 0;
	s->msg_size = 0;
	s->too_big = false;
}

static size_t lmtp_max_rcpts(const struct lmtp_session *s)
{
	return s->set->lmtp_max_recipients != 0 ? s->set->lmtp_max_recipients
	                                        : LMTP_DEFAULT_MAX_RCPT;
}

/*
 * Find the store user for recipient MAILBOX (DESIGN section 4): the names
 * from lmtp_user_candidates() are tried in order in one short read
 * transaction.  Returns STORE_OK with *USER malloc'd, STORE_NOTFOUND,
 * STORE_INVALID (not a usable address) or STORE_TEMPFAIL.
 */
static int lmtp_resolve(struct lmtp_session *s, const char *mailbox, char **user)
{
	char *cand[LMTP_MAX_CANDIDATES];
	size_t n = lmtp_user_candidates(mailbox, cand);
	int status = STORE_NOTFOUND;
	store_txn *t;

	if (n == 0)
		return STORE_INVALID;
	t = store_read_begin(conn_store(s->c));
	if (t == NULL) {
		status = STORE_TEMPFAIL;
	} else {
		for (size_t i = 0; i < n && status == STORE_NOTFOUND; i++) {
			struct store_user u;
			int r = store_user_get(t, cand[i], &u);

			if (r == STORE_OK) {
				*user = strdup(u.name);
				status = *user != NULL ? STORE_OK : STORE_TEMPFAIL;
			} else if (r == STORE_TEMPFAIL || r == STORE_CORRUPT) {
				status = STORE_TEMPFAIL;
			}
			/* STORE_INVALID: a name the store cannot hold is no user. */
		}
		store_read_end(t);
	}
	for (size_t i = 0; i < n; i++)
		free(cand[i]);
	return status;
}

/* Add an accepted recipient, taking USER; a user already in the
 * transaction is delivered to once (see docs/lmtp.md).  Returns -1 out of
 * memory, having changed nothing. */
static int lmtp_add_rcpt(struct lmtp_session *s, const char *addr, char *user)
{
	struct lmtp_rcpt *rcpts;
	struct lmtp_delivery *dv;
	char *copy = strdup(addr);
	size_t d;

	if (copy == NULL)
		goto fail;
	rcpts = realloc(s->rcpts, (s->nrcpts + 1) * sizeof *rcpts);
	if (rcpts == NULL)
		goto fail;
	s->rcpts = rcpts;
	for (d = 0; d < s->ndeliveries; d++) {
		if (strcmp(s->deliveries[d].user, user) == 0)
			break;
	}
	if (d == s->ndeliveries) {
		dv = realloc(s->deliveries, (d + 1) * sizeof *dv);
		if (dv == NULL)
			goto fail;
		s->deliveries = dv;
		dv[d] = (struct lmtp_delivery){ .s = s, .user = user };
		s->ndeliveries++;
		user = NULL;
	}
	rcpts[s->nrcpts++] = (struct lmtp_rcpt){ .addr = copy, .delivery = d };
	free(user);
	return 0;
fail:
	free(copy);
	free(user);
	return -1;
}

/* ----------------------------------------------------------- delivery */

/* The reply to one accepted RCPT after the final ".", and its log line. */
static void lmtp_report_rcpt(struct lmtp_session *s, const struct lmtp_rcpt *r,
                             bool write)
{
	const struct lmtp_delivery *d = &s->deliveries[r->delivery];

	if (d->status == STORE_OK) {
		conn_log(s->c, LOGL_INFO,
		         "delivered from=<%s> to=<%s> user=%s size=%zu: saved uid=%" PRIu32,
		         s->sender, r->addr, d->user, s->msg_size, d->uid);
	} else {
		conn_log(s->c, LOGL_INFO,
		         "delivery from=<%s> to=<%s> user=%s size=%zu failed: %s",
		         s->sender, r->addr, d->user, s->msg_size,
		         store_strerror(d->status));
	}
	if (!write)
		return;
	switch (d->status) {
	case STORE_OK:
		lmtp_reply(s, "250 2.0.0 <%s> Saved as UID %" PRIu32, r->addr, d->uid);
		break;
	case STORE_OVERQUOTA:
		/* RFC 3463 X.2.2, mailbox full: "should be used as a
		 * persistent transient failure", so the operator chooses
		 * between a bounce and a retry (quota.lmtp_over_quota). */
		if (s->set->over_quota_temporary)
			lmtp_reply(s, "452 4.2.2 <%s> Mailbox over quota, try again later",
			           r->addr);
		else
			lmtp_reply(s, "552 5.2.2 <%s> Mailbox over quota", r->addr);
		break;
	case STORE_NOSPACE:
		/* The disk or the map is full: RFC 5321 452 (insufficient
		 * system storage) with RFC 3463 X.3.1 (mail system full). */
		lmtp_reply(s, "452 4.3.1 <%s> Insufficient system storage, try again later",
		           r->addr);
		break;
	case STORE_NOTFOUND:
		/* The user was deleted between RCPT and the commit. */
		lmtp_reply(s, "550 5.1.1 <%s> User unknown", r->addr);
		break;
	default:
		/* Temporary, so the MTA keeps the mail: never bounce on a
		 * store problem the operator can fix. */
		lmtp_reply(s, "451 4.3.0 <%s> Temporary failure, try again later",
		           r->addr);
		break;
	}
}

/* Every request is done: answer every RCPT and end the transaction. */
static void lmtp_finish(struct lmtp_session *s, bool write)
{
	for (size_t i = 0; i < s->nrcpts; i++)
		lmtp_report_rcpt(s, &s->rcpts[i], write);
	lmtp_reset(s);
	s->state = LMTP_S_READY;
	s->errors = 0;
}

/*
 * One store request completed.  After the last, answer and take input
 * again.  The conn_hold taken in lmtp_deliver keeps S alive until
 * conn_release; if the client went away meanwhile, only log.
 */
static void lmtp_pending_done(struct lmtp_session *s)
{
	conn *c = s->c;
	bool closed;

	if (--s->pending > 0)
		return;
	closed = conn_closed(c);
	lmtp_finish(s, !closed);
	if (!closed) {
		/* The replies go out before the store wakes the IMAP
		 * sessions watching these mailboxes (store.c deliver_done
		 * runs the watchers after this callback), so an MTA is not
		 * kept waiting on thousands of IDLE pushes. */
		conn_flush(c);
		conn_resume(c); /* may run pipelined commands at once */
	}
	conn_release(c);        /* may free S: nothing after this */
}

static void lmtp_delivered(store_req *r, void *arg)
{
	struct lmtp_delivery *d = arg;

	d->status = store_req_status(r);
	if (d->status == STORE_OK && store_req_count(r) > 0)
		d->uid = store_req_result(r, 0)->uid;
	lmtp_pending_done(d->s);
}

/*
 * Queue one request per user.  Separate requests, so that one recipient
 * over quota does not fail the others; queued together, so the writer puts
 * them in one durable commit.  Only then is 250 sent (DESIGN section 3).
 */
static void lmtp_deliver(struct lmtp_session *s)
{
	store *st = conn_store(s->c);

	s->state = LMTP_S_DELIVERING;
	/* The extra count keeps a callback that ran early from finishing the
	 * transaction while this loop still walks it. */
	s->pending = 1;
	for (size_t i = 0; i < s->ndeliveries; i++) {
		struct lmtp_delivery *d = &s->deliveries[i];
		store_req *r = store_req_new();

		d->s = s;
		d->status = STORE_TEMPFAIL;
		d->uid = 0;
		if (r == NULL)
			continue;
		store_req_deliver(r, d->user, NULL, s->msg, 0, 0);
		s->pending++;
		store_req_submit(st, r, lmtp_delivered, d);
	}
	store_msg_unref(s->msg); /* each request holds its own reference */
	s->msg = NULL;
	if (s->pending > 1) {
		/* Callbacks run from the loop, later: pipelined commands wait
		 * in the connection's buffer until the replies are out. */
		conn_pause(s->c);
		conn_hold(s->c);
		s->pending--;
		return;
	}
	/* Nothing in flight (no request could be made): answer now. */
	s->pending = 0;
	lmtp_finish(s, true);
}

/* The terminating "." arrived (input is back in line mode). */
static void lmtp_data_end(struct lmtp_session *s)
{
	size_t max = s->set->max_message_size;

	if (!s->too_big) {
		s->msg_size = store_msg_finish(s->msg);
		if (max != 0 && s->msg_size > max)
			s->too_big = true;
	}
	if (s->too_big) {
		/* RFC 2033 section 4.2: still one reply per accepted RCPT. */
		for (size_t i = 0; i < s->nrcpts; i++) {
			lmtp_reply(s, "552 5.3.4 <%s> Message too big for system",
			           s->rcpts[i].addr);
			conn_log(s->c, LOGL_INFO,
			         "delivery from=<%s> to=<%s> size=%" PRIu64
			         " refused: over the %zu-octet limit",
			         s->sender, s->rcpts[i].addr, s->data_bytes, max);
		}
		lmtp_reset(s);
		s->state = LMTP_S_READY;
		return;
	}
	lmtp_deliver(s);
}

/* Content from the DATA decoder.  Past the size limit, keep reading (the
 * client must reach the ".") but stop storing. */
static void lmtp_data_emit(void *arg, const char *p, size_t len)
{
	struct lmtp_session *s = arg;
	size_t max = s->set->max_message_size;

	s->data_bytes += len;
	if (s->too_big)
		return;
	if (max != 0 && s->data_bytes > max) {
		s->too_big = true;
		store_msg_unref(s->msg);
		s->msg = NULL;
		return;
	}
	store_msg_append(s->msg, p, len);
}

/* ------------------------------------------------------------ commands */

static void lmtp_lhlo(struct lmtp_session *s, char *args)
{
	size_t max = s->set->max_message_size;

	if (*args == '\0') {
		lmtp_fail(s, "501 5.5.4 Syntax: LHLO domain");
		return;
	}
	/* Like EHLO, LHLO resets any transaction (RFC 5321 section 4.1.4). */
	lmtp_reset(s);
	s->state = LMTP_S_READY;
	lmtp_reply(s, "250-%s", s->hostname);
	lmtp_reply(s, "250-PIPELINING");
	lmtp_reply(s, "250-ENHANCEDSTATUSCODES");
	lmtp_reply(s, "250-8BITMIME");
	if (max != 0)
		lmtp_reply(s, "250 SIZE %zu", max);
	else
		lmtp_reply(s, "250 SIZE");
}

static void lmtp_helo(struct lmtp_session *s, char *args)
{
	/* RFC 2033 section 4.1: MUST NOT accept HELO or EHLO; 500 advised. */
	lmtp_fail(s, "500 5.5.1 This is LMTP: use LHLO");
}

/* Parse a SIZE=n value; a number too large to hold reads as UINT64_MAX. */
static int lmtp_parse_size(const char *v, uint64_t *out)
{
	uint64_t n = 0;

	if (v == NULL || *v == '\0')
		return -1;
	for (; *v != '\0'; v++) {
		if (*v < '0' || *v > '9')
			return -1;
		if (n > (UINT64_MAX - 9) / 10)
			n = UINT64_MAX;
		else
			n = n * 10 + (uint64_t)(*v - '0');
	}
	*out = n;
	return 0;
}

static void lmtp_mail(struct lmtp_session *s, char *args)
{
	size_t max = s->set->max_message_size;
	char *path, *params, *kw, *val;
	int r;

	if (strncasecmp(args, "FROM:", 5) != 0) {
		lmtp_fail(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	if (lmtp_parse_path(args + 5, true, &path, &params) < 0) {
		lmtp_fail(s, "501 5.1.7 Bad sender address syntax");
		return;
	}
	while ((r = lmtp_param_next(&params, &kw, &val)) > 0) {
		if (strcasecmp(kw, "BODY") == 0) {
			if (val == NULL || (strcasecmp(val, "7BIT") != 0 &&
			                    strcasecmp(val, "8BITMIME") != 0)) {
				lmtp_fail(s, "501 5.5.4 BODY must be 7BIT or 8BITMIME");
				return;
			}
		} else if (strcasecmp(kw, "SIZE") == 0) {
			uint64_t n;

			if (lmtp_parse_size(val, &n) < 0) {
				lmtp_fail(s, "501 5.5.4 Bad SIZE parameter");
				return;
			}
			/* RFC 1870 section 6.2: refuse early what will not fit. */
			if (max != 0 && n > max) {
				lmtp_reply(s, "552 5.3.4 Message size exceeds fixed "
				              "maximum message size");
				return;
			}
		} else {
			lmtp_fail(s, "555 5.5.4 Unsupported parameter %s", kw);
			return;
		}
	}
	if (r < 0) {
		lmtp_fail(s, "501 5.5.4 Syntax error in parameters");
		return;
	}
	s->sender = strdup(path);
	if (s->sender == NULL) {
		lmtp_reply(s, "451 4.3.0 Out of memory");
		return;
	}
	s->state = LMTP_S_MAIL;
	lmtp_reply(s, "250 2.1.0 Sender OK");
}

static void lmtp_rcpt(struct lmtp_session *s, char *args)
{
	char *path, *params, *kw, *val, *user = NULL;
	int r;

	if (strncasecmp(args, "TO:", 3) != 0) {
		lmtp_fail(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if (lmtp_parse_path(args + 3, false, &path, &params) < 0) {
		lmtp_fail(s, "501 5.1.3 Bad recipient address syntax");
		return;
	}
	r = lmtp_param_next(&params, &kw, &val);
	if (r < 0) {
		lmtp_fail(s, "501 5.5.4 Syntax error in parameters");
		return;
	}
	if (r > 0) {
		lmtp_fail(s, "555 5.5.4 Unsupported parameter %s", kw);
		return;
	}
	/* RFC 5321 section 4.5.3.1.10: 452 and the client sends the rest in
	 * a later transaction. */
	if (s->nrcpts >= lmtp_max_rcpts(s)) {
		lmtp_reply(s, "452 4.5.3 Too many recipients");
		return;
	}
	switch (lmtp_resolve(s, path, &user)) {
	case STORE_OK:
		break;
	case STORE_NOTFOUND:
		lmtp_reply(s, "550 5.1.1 <%s> User unknown", path);
		return;
	case STORE_INVALID:
		lmtp_fail(s, "501 5.1.3 Bad recipient address syntax");
		return;
	default:
		lmtp_reply(s, "451 4.3.0 <%s> Temporary failure, try again later", path);
		return;
	}
	if (lmtp_add_rcpt(s, path, user) < 0) {
		lmtp_reply(s, "451 4.3.0 Out of memory");
		return;
	}
	s->state = LMTP_S_RCPT;
	lmtp_reply(s, "250 2.1.5 <%s> OK", path);
}

static void lmtp_data(struct lmtp_session *s, char *args)
{
	if (*args != '\0') {
		lmtp_fail(s, "501 5.5.4 DATA takes no arguments");
		return;
	}
	s->msg = store_msg_new();
	if (s->msg == NULL) {
		lmtp_reply(s, "451 4.3.0 Out of memory");
		return;
	}
	lmtp_dot_init(&s->dot);
	s->data_bytes = 0;
	s->too_big = false;
	s->state = LMTP_S_DATA;
	lmtp_reply(s, "354 Start mail input; end with <CRLF>.<CRLF>");
	conn_mode_bytes(s->c);
}

static void lmtp_rset(struct lmtp_session *s, char *args)
{
	if (*args != '\0') {
		lmtp_fail(s, "501 5.5.4 RSET takes no arguments");
		return;
	}
	lmtp_reset(s);
	if (s->state != LMTP_S_GREETED)
		s->state = LMTP_S_READY;
	lmtp_reply(s, "250 2.0.0 OK");
}

static void lmtp_noop(struct lmtp_session *s, char *args)
{
	lmtp_reply(s, "250 2.0.0 OK");
}

static void lmtp_vrfy(struct lmtp_session *s, char *args)
{
	if (*args == '\0') {
		lmtp_fail(s, "501 5.5.4 Syntax: VRFY address");
		return;
	}
	/* RFC 5321 section 3.5.3: 252 when not verifying. */
	lmtp_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message "
	              "and attempt delivery");
}

static void lmtp_quit(struct lmtp_session *s, char *args)
{
	lmtp_reply(s, "221 2.0.0 %s closing connection", s->hostname);
	conn_close(s->c);
}

static const struct lmtp_cmd lmtp_cmds[] = {
	{ "LHLO", lmtp_lhlo, LMTP_LINE_STATES },
	{ "HELO", lmtp_helo, LMTP_LINE_STATES },
	{ "EHLO", lmtp_helo, LMTP_LINE_STATES },
	{ "MAIL", lmtp_mail, LMTP_IN(LMTP_S_READY) },
	{ "RCPT", lmtp_rcpt, LMTP_IN(LMTP_S_MAIL) | LMTP_IN(LMTP_S_RCPT) },
	{ "DATA", lmtp_data, LMTP_IN(LMTP_S_RCPT) },
	{ "RSET", lmtp_rset, LMTP_LINE_STATES },
	{ "NOOP", lmtp_noop, LMTP_LINE_STATES },
	{ "VRFY", lmtp_vrfy, LMTP_LINE_STATES },
	{ "QUIT", lmtp_quit, LMTP_LINE_STATES },
};

/* A verb arrived in a state that does not allow it: say what is missing. */
static void lmtp_bad_sequence(struct lmtp_session *s, const struct lmtp_cmd *cmd)
{
	if (s->state == LMTP_S_GREETED)
		lmtp_fail(s, "503 5.5.1 Send LHLO first");
	else if (cmd->fn == lmtp_mail)
		lmtp_fail(s, "503 5.5.1 Nested MAIL command");
	else if (s->state == LMTP_S_MAIL)
		/* RFC 2033 section 4.2: DATA without a successful RCPT. */
		lmtp_fail(s, "503 5.5.1 No valid recipients");
	else
		lmtp_fail(s, "503 5.5.1 Send MAIL first");
}

/* Commands are text: no NUL or other control characters but HT. */
static bool lmtp_line_is_text(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)line[i];

		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return false;
	}
	return true;
}

/* --------------------------------------------------------- proto_ops */

static void *lmtp_open(conn *c)
{
	struct lmtp_session *s = calloc(1, sizeof *s);

	if (s == NULL)
		return NULL;
	s->c = c;
	s->set = conn_settings(c);
	s->hostname = s->set->hostname != NULL && s->set->hostname[0] != '\0'
	                  ? s->set->hostname
	                  : "localhost";
	s->state = LMTP_S_GREETED;
	/* LMTP has no login: the idle timeout applies from the start. */
	conn_set_timeout(c, conn_idle_timeout(c));
	lmtp_reply(s, "220 %s LMTP onebox ready", s->hostname);
	return s;
}

static void lmtp_line(void *sess, char *line, size_t len)
{
	struct lmtp_session *s = sess;
	const struct lmtp_cmd *cmd = NULL;
	char *args;
	char *sp;

	if (s->state == LMTP_S_DATA || s->state == LMTP_S_DELIVERING) {
		/* Cannot happen: DATA is read in bytes mode and input is
		 * paused during delivery. */
		conn_log(s->c, LOGL_ERR, "command line in DATA/delivery state");
		conn_close(s->c);
		return;
	}
	if (!lmtp_line_is_text(line, len)) {
		lmtp_fail(s, "500 5.5.2 Invalid characters in command");
		return;
	}
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		line[--len] = '\0';
	sp = memchr(line, ' ', len);
	if (sp != NULL) {
		*sp = '\0';
		for (args = sp + 1; *args == ' '; args++)
			;
	} else {
		args = line + len;
	}
	for (size_t i = 0; i < sizeof lmtp_cmds / sizeof lmtp_cmds[0]; i++) {
		if (strcasecmp(line, lmtp_cmds[i].verb) == 0) {
			cmd = &lmtp_cmds[i];
			break;
		}
	}
	if (cmd == NULL) {
		lmtp_fail(s, "500 5.5.2 Command unrecognized");
		return;
	}
	if ((cmd->states & LMTP_IN(s->state)) == 0) {
		lmtp_bad_sequence(s, cmd);
		return;
	}
	cmd->fn(s, args);
}

static size_t lmtp_bytes(void *sess, const char *p, size_t len)
{
	struct lmtp_session *s = sess;
	bool done;
	size_t used;

	if (s->state != LMTP_S_DATA) {
		conn_mode_line(s->c);
		return 0;
	}
	used = lmtp_dot_decode(&s->dot, p, len, lmtp_data_emit, s, &done);
	if (done) {
		/* What follows the "." is pipelined commands: line mode. */
		conn_mode_line(s->c);
		lmtp_data_end(s);
	}
	return used;
}

static void lmtp_line_too_long(void *sess)
{
	struct lmtp_session *s = sess;

	/* RFC 5321 section 4.5.3.1.4: "500 Line too long". */
	lmtp_fail(s, "500 5.5.2 Line too long");
}

static void lmtp_drained(void *sess)
{
	/* Replies are small and input stops while congested: nothing to do. */
}

static void lmtp_timeout(void *sess)
{
	struct lmtp_session *s = sess;

	lmtp_reply(s, "421 4.4.2 %s idle timeout", s->hostname);
}

static void lmtp_close(void *sess)
{
	struct lmtp_session *s = sess;

	lmtp_reset(s);
	free(s);
}

const struct proto_ops lmtp_ops = {
	.name = "lmtp",
	.refuse_busy = "421 4.3.2 Too many connections, try later\r\n",
	.no_login = true,
	.open = lmtp_open,
	.line = lmtp_line,
	.bytes = lmtp_bytes,
	.line_too_long = lmtp_line_too_long,
	.drained = lmtp_drained,
	.timeout = lmtp_timeout,
	.close = lmtp_close,
};
