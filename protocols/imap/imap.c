/*
 * imap.c - the IMAP4rev1 front-end's session (RFC 3501): input through the
 * command assembler, dispatch through the command table, tagged answers,
 * and the commands of the connection itself: CAPABILITY, NOOP, LOGOUT,
 * STARTTLS, LOGIN, AUTHENTICATE (protocols/sasl.c; SASL-IR RFC 4959), ENABLE
 * (RFC 5161), ID (RFC 2971), NAMESPACE (RFC 2342), IDLE (RFC 2177), CHECK,
 * UNAUTHENTICATE (RFC 8437), COMPRESS (RFC 4978; the work is server/conn.c's).
 *
 * Input: a line goes to the assembler (imap_parser.h), which says whether
 * the command is whole, a literal follows (bytes mode; "+" first for a
 * synchronizing one), or the command is refused.  Two exchanges bypass the
 * assembler: the SASL response line of AUTHENTICATE and the DONE of IDLE.
 * A command that waits on the store or on a password check pauses input,
 * so pipelined commands run after it, in order.  The mailbox commands live
 * in imap_cmd_*.c; the selected mailbox's view in imap_view.c.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "protocols/imap/imap_int.h"
#include "protocols/sasl.h"

#define IMAP_VERSION "0.1.0"
/* RFC 3501 §5.4 asks for an autologout timer of at least 30 minutes. */
#define IMAP_MIN_IDLE_TIMEOUT (30 * 60)
/* Consecutive BAD answers after which the client is dropped. */
#define IMAP_MAX_BAD 20
#define IMAP_MAX_USER 255
#define IMAP_MAX_PASS 1024

/* The session and what only this file needs of it. */
struct imap_conn {
	struct imap_session s; /* first: imap_session pointers are imap_conn's */
	unsigned bad_streak;   /* BAD answers in a row */
	bool sasl_wait;        /* AUTHENTICATE sent "+ ": the next line is the response */
	sasl *sasl;            /* the AUTHENTICATE exchange in progress, or NULL */
	void (*submit_done)(struct imap_session *s, store_req *r);
	enum imap_literal_mode literal_cfg; /* imap.nonsync_literals */
};

static struct imap_conn *imap_conn_of(struct imap_session *s)
{
	return (struct imap_conn *)s;
}

/* ---------------------------------------------------------- answering */

unsigned imap_write_flags(const struct imap_session *s)
{
	/* RFC 9051 §4.3.1, Appendix A: UTF-8 in quoted strings and mailbox
	 * names once the client has enabled UTF8=ACCEPT or IMAP4rev2. */
	return (s->enabled & (IMAP_EN_UTF8 | IMAP_EN_REV2)) ? IMAP_WRITE_UTF8 : 0;
}

void imap_flush(struct imap_session *s)
{
	if (s->out.oom) {
		conn_log(s->c, LOGL_ERR, "imap: out of memory building a response");
		imap_wbuf_reset(&s->out);
		s->out.oom = false;
		conn_puts(s->c, "* BYE Server out of memory\r\n");
		conn_close(s->c);
		return;
	}
	if (s->out.len)
		conn_write(s->c, s->out.data, s->out.len);
	imap_wbuf_reset(&s->out);
}

/* Append FMT to W; bounded by the buffer's growth, never by a fixed size.
 * The attribute lets the compiler check FMT in the callers, which pass
 * their own (checked) format on. */
__attribute__((format(printf, 2, 0)))
static void wbuf_vprintf(struct imap_wbuf *w, const char *fmt, va_list ap)
{
	char small[256];
	va_list aq;
	int n;

	va_copy(aq, ap);
	n = vsnprintf(small, sizeof small, fmt, aq);
	va_end(aq);
	if (n < 0)
		return;
	if ((size_t)n < sizeof small) {
		imap_write_bytes(w, small, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (!big) {
		w->oom = true;
		return;
	}
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	imap_write_bytes(w, big, (size_t)n);
	free(big);
}

void imap_untagged(struct imap_session *s, const char *fmt, ...)
{
	va_list ap;

	imap_write_str(&s->out, "* ");
	va_start(ap, fmt);
	wbuf_vprintf(&s->out, fmt, ap);
	va_end(ap);
	imap_write_crlf(&s->out);
}

/* The end of every command: sync, the tagged line, flush, clean up. */
__attribute__((format(printf, 4, 0)))
static void imap_answer(struct imap_session *s, const char *word, const char *code,
                        const char *fmt, va_list ap)
{
	struct imap_conn *ic = imap_conn_of(s);
	const char *tag = s->cmd.tag.len ? s->cmd.tag.s : "*";

	/* RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH
	 * by sequence number; the UID forms may have them.  A command refused
	 * before it ran (cur NULL) reports nothing. */
	if (s->cur && s->state == IMAP_SELECTED && !conn_closed(s->c))
		imap_view_sync(s, !(s->cur->flags & IMAP_CF_NO_EXPUNGE) || s->uid);
	imap_write_str(&s->out, tag);
	imap_write_byte(&s->out, ' ');
	imap_write_str(&s->out, word);
	imap_write_byte(&s->out, ' ');
	if (code) {
		imap_write_byte(&s->out, '[');
		imap_write_str(&s->out, code);
		imap_write_str(&s->out, "] ");
	}
	wbuf_vprintf(&s->out, fmt, ap);
	imap_write_crlf(&s->out);
	imap_flush(s);

	ic->bad_streak = strcmp(word, "BAD") == 0 ? ic->bad_streak + 1 : 0;
	ic->sasl_wait = false;
	s->cur = NULL;
	s->uid = false;
	s->busy = false;
	s->idling = false;
	s->resume = NULL;
	s->cmd_state = NULL;
	imap_cmd_free(&s->cmd);
	s->cmd.tag.s = "";
	s->cmd.tag.len = 0;
	if (conn_closed(s->c))
		return;
	if (s->logout) {
		conn_close(s->c);
		return;
	}
	if (ic->bad_streak >= IMAP_MAX_BAD) {
		conn_puts(s->c, "* BYE Too many invalid commands\r\n");
		conn_close(s->c);
		return;
	}
	/* Set after login or IDLE; any command is activity. */
	if (s->state != IMAP_NOTAUTH)
		conn_set_timeout(s->c, conn_idle_timeout(s->c) < IMAP_MIN_IDLE_TIMEOUT
		                            ? IMAP_MIN_IDLE_TIMEOUT
		                            : conn_idle_timeout(s->c));
	conn_resume(s->c);
}

void imap_ok(struct imap_session *s, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	imap_answer(s, "OK", code, fmt, ap);
	va_end(ap);
}

void imap_no(struct imap_session *s, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	imap_answer(s, "NO", code, fmt, ap);
	va_end(ap);
}

void imap_bad(struct imap_session *s, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	imap_answer(s, "BAD", code, fmt, ap);
	va_end(ap);
}

/* A refusal outside any command (no tag, or the assembler's): untagged or
 * tagged with TAG, counted as a BAD. */
static void imap_refuse(struct imap_session *s, const char *tag, const char *word,
                        const char *code, const char *text)
{
	struct imap_conn *ic = imap_conn_of(s);

	imap_write_str(&s->out, tag ? tag : "*");
	imap_write_byte(&s->out, ' ');
	imap_write_str(&s->out, word);
	imap_write_byte(&s->out, ' ');
	if (code) {
		imap_write_byte(&s->out, '[');
		imap_write_str(&s->out, code);
		imap_write_str(&s->out, "] ");
	}
	imap_write_str(&s->out, text);
	imap_write_crlf(&s->out);
	imap_flush(s);
	if (++ic->bad_streak >= IMAP_MAX_BAD && !conn_closed(s->c)) {
		conn_puts(s->c, "* BYE Too many invalid commands\r\n");
		conn_close(s->c);
	}
}

static void imap_submit_done(store_req *r, void *arg)
{
	struct imap_session *s = arg;
	struct imap_conn *ic = imap_conn_of(s);
	conn *c = s->c;
	void (*done)(struct imap_session *, store_req *) = ic->submit_done;

	ic->submit_done = NULL;
	if (!conn_closed(c) && done)
		done(s, r);
	conn_release(c); /* may free S */
}

void imap_submit(struct imap_session *s, store_req *r,
                 void (*done)(struct imap_session *s, store_req *r))
{
	struct imap_conn *ic = imap_conn_of(s);

	s->busy = true;
	ic->submit_done = done;
	conn_pause(s->c);
	conn_hold(s->c);
	store_req_submit(conn_store(s->c), r, imap_submit_done, s);
}

/* ------------------------------------------------------- capabilities */

static bool imap_password_ok(const struct imap_session *s)
{
	return conn_is_tls(s->c) || conn_settings(s->c)->allow_plaintext;
}

/* The capability list is about 400 octets with every AUTH= mechanism. */
#define IMAP_CAPS_MAX 768

uint64_t imap_append_limit(const struct imap_session *s)
{
	return s->as.lim.max_append;
}

/* The capability list for this connection and state, without "CAPABILITY". */
static void imap_capabilities(const struct imap_session *s, char *buf, size_t len)
{
	bool pre = s->state == IMAP_NOTAUTH;
	char auth[128] = "";

	/* AUTH= per the plaintext policy (sasl.c); LOGINDISABLED when LOGIN
	 * is refused (RFC 3501 section 6.2.3). */
	if (pre) {
		sasl_mech_list(s->c, " AUTH=", "", auth, sizeof auth);
		if (!imap_password_ok(s))
			snprintf(auth + strlen(auth), sizeof auth - strlen(auth), " LOGINDISABLED");
	}
	/* RFC 7888 §5: never both LITERAL+ and LITERAL-. */
	enum imap_literal_mode lm = ((const struct imap_conn *)s)->literal_cfg;
	const char *literal = lm == IMAP_LITERAL_PLUS    ? " LITERAL+"
	                    : lm == IMAP_LITERAL_MINUS ? " LITERAL-"
	                                               : "";
	snprintf(buf, len,
	         "IMAP4rev1 IMAP4rev2%s SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE "
	         "CHILDREN LIST-EXTENDED SPECIAL-USE CREATE-SPECIAL-USE BINARY CONDSTORE QRESYNC "
	         "ESEARCH SEARCHRES SORT SORT=DISPLAY THREAD=ORDEREDSUBJECT THREAD=REFERENCES "
	         "LIST-STATUS STATUS=SIZE QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE SAVEDATE OBJECTID "
	         "APPENDLIMIT=%" PRIu64 "%s%s%s%s",
	         literal, imap_append_limit(s),
	         pre ? "" : " COMPRESS=DEFLATE", /* RFC 4978: command-auth */
	         /* RFC 8437 §3: advertised once there is something to undo. */
	         pre ? "" : " UNAUTHENTICATE",
	         pre && conn_tls_available(s->c) && !conn_is_tls(s->c) ? " STARTTLS" : "",
	         auth);
}

/* ------------------------------------------------------------- commands */

static bool imap_no_args(struct imap_session *s, struct imap_cmd *cmd)
{
	if (imap_parse_end(cmd) == IMAP_PARSE_OK)
		return true;
	imap_bad(s, NULL, "%s", cmd->error);
	return false;
}

static void imap_cmd_capability(struct imap_session *s, struct imap_cmd *cmd)
{
	char caps[IMAP_CAPS_MAX];

	if (!imap_no_args(s, cmd))
		return;
	imap_capabilities(s, caps, sizeof caps);
	imap_untagged(s, "CAPABILITY %s", caps);
	imap_ok(s, NULL, "CAPABILITY completed");
}

static void imap_cmd_noop(struct imap_session *s, struct imap_cmd *cmd)
{
	if (imap_no_args(s, cmd))
		imap_ok(s, NULL, "NOOP completed");
}

static void imap_cmd_check(struct imap_session *s, struct imap_cmd *cmd)
{
	/* RFC 3501 §6.4.1: every write is durable before its OK already. */
	if (imap_no_args(s, cmd))
		imap_ok(s, NULL, "CHECK completed");
}

static void imap_cmd_logout(struct imap_session *s, struct imap_cmd *cmd)
{
	if (!imap_no_args(s, cmd))
		return;
	imap_untagged(s, "BYE onebox logging out");
	s->logout = true;
	imap_ok(s, NULL, "LOGOUT completed");
}

static void imap_cmd_starttls(struct imap_session *s, struct imap_cmd *cmd)
{
	if (!imap_no_args(s, cmd))
		return;
	if (conn_is_tls(s->c)) {
		imap_bad(s, NULL, "TLS is already active");
		return;
	}
	if (!conn_tls_available(s->c)) {
		imap_no(s, NULL, "STARTTLS is not available");
		return;
	}
	imap_ok(s, NULL, "Begin TLS negotiation now");
	/* RFC 3501 §6.2.1: whatever the client pipelined after STARTTLS is
	 * dropped; the connection discards its buffer, we drop any command
	 * the assembler had begun. */
	if (conn_starttls(s->c) != 0) {
		conn_log(s->c, LOGL_ERR, "imap: STARTTLS failed to start");
		conn_close(s->c);
		return;
	}
	imap_asm_reset(&s->as);
}

/* RFC 4978 section 3.  The OK is queued in clear, then the connection
 * deflates all that follows and inflates all the client sends after the
 * command, including what it pipelined behind it. */
static void imap_cmd_compress(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_str mech;

	if (imap_parse_sp(cmd) || imap_parse_atom(cmd, &mech) || imap_parse_end(cmd)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	if (strcasecmp(mech.s, "DEFLATE") != 0) {
		imap_bad(s, NULL, "Unknown compression mechanism");
		return;
	}
	/* Section 3 allows BAD here too; NO [COMPRESSIONACTIVE] is its answer
	 * for "the same mechanism is active already", which says more. */
	if (conn_compressed(s->c)) {
		imap_no(s, "COMPRESSIONACTIVE", "DEFLATE is already active");
		return;
	}
	imap_ok(s, NULL, "DEFLATE active");
	if (!conn_closed(s->c) && conn_compress_start(s->c) != 0) {
		conn_log(s->c, LOGL_ERR, "imap: COMPRESS failed to start");
		conn_close(s->c);
	}
}

/* LOGIN or AUTHENTICATE succeeded: the tagged OK with the capabilities. */
static void imap_login_ok(struct imap_session *s, const char *user, uint32_t user_id)
{
	conn *c = s->c;
	char caps[IMAP_CAPS_MAX];

	free(s->user);
	s->user = strdup(user);
	if (!s->user) {
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	s->user_id = user_id;
	s->state = IMAP_AUTH;
	conn_set_user(c, user);
	conn_log(c, LOGL_INFO, "imap login");
	imap_capabilities(s, caps, sizeof caps);
	char code[IMAP_CAPS_MAX + 16];
	snprintf(code, sizeof code, "CAPABILITY %s", caps);
	imap_ok(s, code, "Logged in");
}

static void imap_auth_done(conn *c, void *sess, bool ok, const char *user, uint32_t user_id)
{
	struct imap_session *s = sess;

	if (conn_closed(c))
		return;
	if (!ok) {
		imap_no(s, "AUTHENTICATIONFAILED", "Authentication failed");
		return;
	}
	imap_login_ok(s, user, user_id);
}

/* Start the password check; the answer comes from imap_auth_done. */
static void imap_check_password(struct imap_session *s, const char *user, size_t ulen,
                                const char *pass, size_t plen)
{
	char *u, *p;

	if (ulen == 0 || ulen > IMAP_MAX_USER || plen > IMAP_MAX_PASS ||
	    memchr(user, '\0', ulen) || memchr(pass, '\0', plen)) {
		imap_no(s, "AUTHENTICATIONFAILED", "Authentication failed");
		return;
	}
	u = strndup(user, ulen);
	p = strndup(pass, plen);
	if (!u || !p) {
		free(u);
		free(p);
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	s->busy = true;
	conn_pause(s->c);
	conn_auth_password(s->c, u, p, imap_auth_done);
	explicit_bzero(p, plen);
	free(p);
	free(u);
}

static void imap_cmd_login(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_str user, pass;

	if (imap_parse_sp(cmd) || imap_parse_astring(cmd, &user) || imap_parse_sp(cmd) ||
	    imap_parse_astring(cmd, &pass) || imap_parse_end(cmd)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	if (!imap_password_ok(s)) {
		/* RFC 3501 §6.2.3 and LOGINDISABLED; RFC 5530 code. */
		imap_no(s, "PRIVACYREQUIRED", "Password login needs TLS; use STARTTLS first");
		return;
	}
	imap_check_password(s, user.s, user.len, pass.s, pass.len);
}

/* ------------------------------------------------------ AUTHENTICATE */

static void imap_sasl_end(struct imap_session *s)
{
	struct imap_conn *ic = imap_conn_of(s);

	sasl_free(ic->sasl);
	ic->sasl = NULL;
	ic->sasl_wait = false;
}

/* Act on a step of the exchange (protocols/sasl.h). */
static void imap_sasl_outcome(struct imap_session *s, enum sasl_status st)
{
	struct imap_conn *ic = imap_conn_of(s);
	char user[256];
	uint32_t id;

	switch (st) {
	case SASL_CONTINUE: {
		/* RFC 3501 §7.5: "+ " and the base64 challenge. */
		char *b64 = sasl_challenge_b64(ic->sasl);
		if (!b64) {
			imap_sasl_end(s);
			imap_no(s, "UNAVAILABLE", "Out of memory");
			return;
		}
		imap_write_str(&s->out, "+ ");
		imap_write_str(&s->out, b64);
		imap_write_crlf(&s->out);
		free(b64);
		imap_flush(s);
		ic->sasl_wait = true;
		if (s->busy) { /* after a check: take input again */
			s->busy = false;
			conn_resume(s->c);
		}
		return;
	}
	case SASL_PENDING:
		s->busy = true;
		conn_pause(s->c);
		return;
	case SASL_SUCCESS:
		snprintf(user, sizeof user, "%s", sasl_user(ic->sasl));
		id = sasl_user_id(ic->sasl);
		imap_sasl_end(s);
		imap_login_ok(s, user, id);
		return;
	case SASL_FAILED:
		imap_sasl_end(s);
		imap_no(s, "AUTHENTICATIONFAILED", "Authentication failed");
		return;
	case SASL_NOT_PERMITTED:
		imap_sasl_end(s);
		imap_no(s, "AUTHORIZATIONFAILED", "Authorization identity not permitted");
		return;
	case SASL_MALFORMED:
		imap_sasl_end(s);
		imap_bad(s, NULL, "Malformed SASL response");
		return;
	case SASL_BAD_BASE64:
		imap_sasl_end(s);
		imap_bad(s, NULL, "Invalid base64 in the SASL response");
		return;
	}
}

static void imap_sasl_cb(sasl *x, void *arg, enum sasl_status st)
{
	struct imap_session *s = arg;

	if (!conn_closed(s->c))
		imap_sasl_outcome(s, st);
}

/* One base64 client message (an initial response or a continuation line). */
static void imap_sasl_data(struct imap_session *s, const char *b64, size_t len)
{
	imap_sasl_outcome(s, sasl_step_b64(imap_conn_of(s)->sasl, b64, len));
}

static void imap_cmd_authenticate(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_conn *ic = imap_conn_of(s);
	struct imap_str mech, ir = { NULL, 0 };

	if (imap_parse_sp(cmd) || imap_parse_atom(cmd, &mech)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	if (!imap_parse_at_end(cmd) && (imap_parse_sp(cmd) || imap_parse_atom(cmd, &ir) ||
	                                imap_parse_end(cmd))) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	switch (sasl_mech_usable(s->c, mech.s)) {
	case SASL_MECH_UNKNOWN:
		imap_no(s, NULL, "Unsupported authentication mechanism");
		return;
	case SASL_MECH_NEEDS_TLS:
		imap_no(s, "PRIVACYREQUIRED", "Password authentication needs TLS; use STARTTLS first");
		return;
	case SASL_MECH_OK:
		break;
	}
	ic->sasl = sasl_new(s->c, mech.s, imap_sasl_cb, s);
	if (!ic->sasl) {
		imap_no(s, "UNAVAILABLE", "Out of memory");
		return;
	}
	if (ir.s) {
		/* RFC 4959 §3: "=" is an empty initial response. */
		imap_sasl_data(s, ir.s, ir.len == 1 && ir.s[0] == '=' ? 0 : ir.len);
		return;
	}
	imap_sasl_outcome(s, sasl_step(ic->sasl, NULL, 0, false));
}

static void imap_sasl_line(struct imap_session *s, char *line, size_t len)
{
	imap_conn_of(s)->sasl_wait = false;
	if (len == 1 && line[0] == '*') {
		/* RFC 3501 §6.2.2: the client cancelled; answered BAD. */
		imap_sasl_end(s);
		imap_bad(s, NULL, "Authentication cancelled");
		return;
	}
	imap_sasl_data(s, line, len);
	explicit_bzero(line, len);
}

/* ---------------------------------------------------- UNAUTHENTICATE */

/*
 * RFC 8437 §3: back to not-authenticated state on the same connection.
 * Everything that belongs to the user or to what the client set up since
 * login goes; the TLS layer and ID stay (§3, §4.1).  The selected mailbox
 * is closed without an expunge, like UNSELECT; its view holds the watch,
 * the UIDs, the \Recent claims and the saved search result "$" (RFC 5182,
 * §4.1).  Every ENABLE-controlled behaviour is off again (§4.1: CONDSTORE,
 * QRESYNC, UTF8=ACCEPT, IMAP4rev2 all live in s->enabled).  Quota answers
 * are read from the store per command, so nothing cached survives.  The
 * command cannot fail: §3 forbids NO, since a client may have pipelined
 * AUTHENTICATE behind it.
 */
static void imap_forget_user(struct imap_session *s)
{
	imap_view_close(s);
	s->enabled = 0;
	free(s->user);
	s->user = NULL;
	s->user_id = 0;
	s->idling = false;
	s->state = IMAP_NOTAUTH;
	conn_set_user(s->c, NULL);
	/* The pre-login limits apply again, as on a new connection. */
	conn_set_timeout(s->c, conn_preauth_timeout(s->c));
}

static void imap_cmd_unauthenticate(struct imap_session *s, struct imap_cmd *cmd)
{
	if (!imap_no_args(s, cmd))
		return;
	bool compressed = conn_compressed(s->c);
	conn_log(s->c, LOGL_INFO, "imap unauthenticate%s", compressed ? " (ending COMPRESS)" : "");
	imap_forget_user(s);
	imap_ok(s, NULL, "UNAUTHENTICATE completed; not authenticated");
	/* RFC 8437 §4.1: DEFLATE (RFC 4978) ends right after the CRLF of
	 * that OK (imap_ok has handed it to the connection), and the client
	 * ends its own after the CRLF of this command; the connection takes
	 * what follows that end in clear. */
	if (compressed && !conn_closed(s->c))
		conn_compress_stop(s->c);
}

static void imap_cmd_enable(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_str *caps;
	size_t n;

	if (imap_parse_enable(cmd, &caps, &n) || imap_parse_end(cmd)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	/* What ENABLE can turn on; the parser upper-cases the names, the
	 * answer spells them as advertised. */
	static const struct {
		const char *upper, *name;
		unsigned bit;
	} known[] = {
		{ "CONDSTORE", "CONDSTORE", IMAP_EN_CONDSTORE },
		{ "QRESYNC", "QRESYNC", IMAP_EN_QRESYNC },
		{ "IMAP4REV2", "IMAP4rev2", IMAP_EN_REV2 }, /* RFC 9051 Appendix A */
	};
	/* RFC 5161 §3.1: what is not known or not ENABLE-able is ignored;
	 * ENABLED names what this command turned on. */
	unsigned listed = 0;
	imap_write_str(&s->out, "* ENABLED");
	for (size_t i = 0; i < n; i++) {
		size_t k = 0;
		while (k < sizeof known / sizeof known[0] && strcmp(caps[i].s, known[k].upper) != 0)
			k++;
		if (k == sizeof known / sizeof known[0] || ((s->enabled | listed) & known[k].bit))
			continue;
		listed |= known[k].bit;
		imap_write_byte(&s->out, ' ');
		imap_write_str(&s->out, known[k].name);
	}
	imap_write_crlf(&s->out);
	/* RFC 7162 §3.2.3: QRESYNC implies CONDSTORE. */
	if (listed & (IMAP_EN_CONDSTORE | IMAP_EN_QRESYNC))
		imap_condstore_enable(s);
	s->enabled |= listed;
	imap_ok(s, NULL, "ENABLE completed");
}

static void imap_cmd_id(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_id_pair *pairs;
	size_t n;

	if (imap_parse_sp(cmd) || imap_parse_id(cmd, &pairs, &n) || imap_parse_end(cmd)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	imap_untagged(s, "ID (\"name\" \"onebox\" \"version\" \"" IMAP_VERSION "\")");
	imap_ok(s, NULL, "ID completed");
}

static void imap_cmd_namespace(struct imap_session *s, struct imap_cmd *cmd)
{
	if (!imap_no_args(s, cmd))
		return;
	/* RFC 2342: one personal namespace, no others. */
	imap_untagged(s, "NAMESPACE ((\"\" \"/\")) NIL NIL");
	imap_ok(s, NULL, "NAMESPACE completed");
}

static void imap_cmd_idle(struct imap_session *s, struct imap_cmd *cmd)
{
	if (!imap_no_args(s, cmd))
		return;
	s->idling = true;
	imap_write_str(&s->out, "+ idling\r\n");
	/* RFC 2177 §3: what is already pending goes out at once. */
	imap_view_sync(s, true);
	imap_flush(s);
	conn_set_timeout(s->c, conn_idle_timeout(s->c) < IMAP_MIN_IDLE_TIMEOUT
	                           ? IMAP_MIN_IDLE_TIMEOUT
	                           : conn_idle_timeout(s->c));
}

static void imap_idle_line(struct imap_session *s, char *line, size_t len)
{
	if (len == 4 && strncasecmp(line, "DONE", 4) == 0)
		imap_ok(s, NULL, "IDLE terminated");
	else
		imap_bad(s, NULL, "Expected DONE to end IDLE");
}

/* ------------------------------------------------------ command table */

#define SEQ_CMD (IMAP_CF_UID | IMAP_CF_NO_EXPUNGE)

static const struct imap_command imap_commands[] = {
	{ "CAPABILITY", imap_cmd_capability, IMAP_ANY, 0 },
	{ "NOOP", imap_cmd_noop, IMAP_ANY, 0 },
	{ "LOGOUT", imap_cmd_logout, IMAP_ANY, 0 },
	{ "ID", imap_cmd_id, IMAP_ANY, 0 },
	{ "STARTTLS", imap_cmd_starttls, IMAP_NOTAUTH, 0 },
	{ "LOGIN", imap_cmd_login, IMAP_NOTAUTH, 0 },
	{ "AUTHENTICATE", imap_cmd_authenticate, IMAP_NOTAUTH, 0 },
	{ "UNAUTHENTICATE", imap_cmd_unauthenticate, IMAP_AUTHED, 0 }, /* RFC 8437 */
	{ "ENABLE", imap_cmd_enable, IMAP_AUTH, 0 },
	{ "NAMESPACE", imap_cmd_namespace, IMAP_AUTHED, 0 },
	{ "IDLE", imap_cmd_idle, IMAP_AUTHED, 0 },
	{ "COMPRESS", imap_cmd_compress, IMAP_AUTHED, 0 }, /* RFC 4978 */
	{ "SELECT", imap_cmd_select, IMAP_AUTHED, 0 },
	{ "EXAMINE", imap_cmd_select, IMAP_AUTHED, 0 },
	{ "CREATE", imap_cmd_create, IMAP_AUTHED, 0 },
	{ "DELETE", imap_cmd_delete, IMAP_AUTHED, 0 },
	{ "RENAME", imap_cmd_rename, IMAP_AUTHED, 0 },
	{ "SUBSCRIBE", imap_cmd_subscribe, IMAP_AUTHED, 0 },
	{ "UNSUBSCRIBE", imap_cmd_subscribe, IMAP_AUTHED, 0 },
	{ "LIST", imap_cmd_list, IMAP_AUTHED, 0 },
	{ "LSUB", imap_cmd_list, IMAP_AUTHED, 0 },
	{ "STATUS", imap_cmd_status, IMAP_AUTHED, 0 },
	{ "APPEND", imap_cmd_append, IMAP_AUTHED, 0 },
	{ "GETQUOTA", imap_cmd_getquota, IMAP_AUTHED, 0 },         /* RFC 9208 §4 */
	{ "GETQUOTAROOT", imap_cmd_getquotaroot, IMAP_AUTHED, 0 },
	{ "SETQUOTA", imap_cmd_setquota, IMAP_AUTHED, 0 },
	{ "CHECK", imap_cmd_check, IMAP_SELECTED, 0 },
	{ "CLOSE", imap_cmd_close, IMAP_SELECTED, 0 },
	{ "UNSELECT", imap_cmd_close, IMAP_SELECTED, 0 },
	{ "EXPUNGE", imap_cmd_expunge, IMAP_SELECTED, IMAP_CF_UID },
	{ "SEARCH", imap_cmd_search, IMAP_SELECTED, SEQ_CMD },
	{ "SORT", imap_cmd_sort, IMAP_SELECTED, SEQ_CMD },     /* RFC 5256 §3 */
	{ "THREAD", imap_cmd_thread, IMAP_SELECTED, SEQ_CMD },
	{ "FETCH", imap_cmd_fetch, IMAP_SELECTED, SEQ_CMD },
	{ "STORE", imap_cmd_store, IMAP_SELECTED, SEQ_CMD },
	/* COPY by number changes nothing here, but its numbers must hold. */
	{ "COPY", imap_cmd_copy, IMAP_SELECTED, SEQ_CMD },
	/* RFC 6851 §3.3: MOVE reports its own EXPUNGEs. */
	{ "MOVE", imap_cmd_copy, IMAP_SELECTED, IMAP_CF_UID },
};

const struct imap_command *imap_command_find(const char *name, bool uid)
{
	for (size_t i = 0; i < sizeof imap_commands / sizeof imap_commands[0]; i++) {
		if (strcmp(imap_commands[i].name, name) != 0)
			continue;
		if (uid && !(imap_commands[i].flags & IMAP_CF_UID))
			return NULL;
		return &imap_commands[i];
	}
	return NULL;
}

/* ------------------------------------------------------------- input */

static unsigned imap_parse_flags(const struct imap_session *s)
{
	/* BINARY (RFC 3516) is always on: FETCH BINARY[] and literal8. */
	return IMAP_PARSE_BINARY |
	       ((s->enabled & (IMAP_EN_UTF8 | IMAP_EN_REV2)) ? IMAP_PARSE_UTF8 : 0);
}

static void imap_execute(struct imap_session *s)
{
	const struct imap_command *cmd;

	if (imap_cmd_parse(&s->cmd, &s->as, imap_parse_flags(s)) != IMAP_PARSE_OK) {
		imap_bad(s, NULL, "%s", s->cmd.error ? s->cmd.error : "Invalid command");
		return;
	}
	cmd = imap_command_find(s->cmd.name, s->cmd.uid);
	if (!cmd) {
		imap_bad(s, NULL, "Unknown command");
		return;
	}
	/* RFC 3501 §6: a command outside its states is a protocol error,
	 * answered BAD like any other (the session state is unchanged). */
	if (!(cmd->states & s->state)) {
		imap_bad(s, NULL, "Command not valid in this state");
		return;
	}
	s->cur = cmd;
	s->uid = s->cmd.uid;
	cmd->fn(s, &s->cmd);
}

/* Act on what the assembler said after a line or literal. */
static void imap_asm_step(struct imap_session *s, enum imap_asm_status st)
{
	switch (st) {
	case IMAP_ASM_COMPLETE:
		conn_mode_line(s->c);
		imap_execute(s);
		break;
	case IMAP_ASM_LITERAL:
		if (imap_asm_needs_continuation(&s->as)) {
			imap_write_str(&s->out, "+ Ready for literal data\r\n");
			imap_flush(s);
		}
		conn_mode_bytes(s->c);
		break;
	case IMAP_ASM_NEED_LINE:
		conn_mode_line(s->c);
		break;
	case IMAP_ASM_REJECT: {
		bool append = s->as.is_append;
		enum imap_asm_error err = imap_asm_error_code(&s->as);
		if (append && err == IMAP_ASM_ERR_LITERAL_TOO_BIG)
			imap_refuse(s, imap_asm_tag(&s->as), "NO", "TOOBIG", imap_asm_error(&s->as));
		else if (err == IMAP_ASM_ERR_LITERAL_MINUS)
			/* RFC 7888 §5: BAD, with TOOBIG at least for APPEND; any
			 * command, so the client knows "{N}" would have done. */
			imap_refuse(s, imap_asm_tag(&s->as), "BAD", "TOOBIG", imap_asm_error(&s->as));
		else
			imap_refuse(s, imap_asm_tag(&s->as), "BAD", NULL, imap_asm_error(&s->as));
		if (imap_asm_in_literal(&s->as))
			conn_mode_bytes(s->c);
		else
			conn_mode_line(s->c);
		break;
	}
	case IMAP_ASM_DISCARDED:
		conn_mode_line(s->c);
		break;
	case IMAP_ASM_CLOSE: {
		/* RFC 7888 §5: the BYE for a literal too big SHOULD say TOOBIG. */
		enum imap_asm_error err = imap_asm_error_code(&s->as);
		bool toobig = err == IMAP_ASM_ERR_LITERAL_MINUS || err == IMAP_ASM_ERR_LITERAL_TOO_BIG;
		conn_printf(s->c, "* BYE %s%s\r\n", toobig ? "[TOOBIG] " : "", imap_asm_error(&s->as));
		conn_close(s->c);
		break;
	}
	}
}

/*
 * The non-synchronizing literals the client may send now: those configured,
 * except that with neither LITERAL+ nor LITERAL- offered, a client that
 * enabled IMAP4rev2 may send "{N+}" up to 4096 octets, which IMAP4rev2's
 * base syntax has (RFC 9051 §4.3); before that, with IMAP4rev1 advertised
 * too, only the IMAP4rev1 base applies (§6.1.1).
 */
static enum imap_literal_mode imap_literal_mode(const struct imap_session *s)
{
	enum imap_literal_mode m = ((const struct imap_conn *)s)->literal_cfg;

	if (m == IMAP_LITERAL_SYNC_ONLY && (s->enabled & IMAP_EN_REV2))
		return IMAP_LITERAL_MINUS;
	return m;
}

static void imap_line(void *sess, char *line, size_t len)
{
	struct imap_session *s = sess;
	struct imap_conn *ic = imap_conn_of(s);

	if (s->busy) {
		conn_log(s->c, LOGL_WARN, "imap: input while busy, dropped");
		return;
	}
	if (ic->sasl_wait) {
		imap_sasl_line(s, line, len);
		return;
	}
	if (s->idling) {
		imap_idle_line(s, line, len);
		return;
	}
	imap_asm_set_literal_mode(&s->as, imap_literal_mode(s));
	imap_asm_step(s, imap_asm_line(&s->as, line, len));
}

static size_t imap_bytes(void *sess, const char *p, size_t len)
{
	struct imap_session *s = sess;
	size_t used = 0;
	enum imap_asm_status st = imap_asm_literal(&s->as, p, len, &used);

	if (st != IMAP_ASM_LITERAL)
		imap_asm_step(s, st);
	return used;
}

static void imap_line_too_long(void *sess)
{
	struct imap_session *s = sess;
	struct imap_conn *ic = imap_conn_of(s);

	if (ic->sasl_wait || s->idling) {
		if (ic->sasl)
			imap_sasl_end(s);
		imap_bad(s, NULL, "Line too long");
		return;
	}
	/* The line is gone, and with it whatever literal it announced: the
	 * command cannot be finished. */
	const char *tag = imap_asm_tag(&s->as);
	char tagcopy[IMAP_TAG_MAX + 1];
	snprintf(tagcopy, sizeof tagcopy, "%s", tag ? tag : "*");
	imap_asm_reset(&s->as);
	conn_mode_line(s->c);
	imap_refuse(s, tagcopy, "BAD", NULL, "Line too long");
}

/* ----------------------------------------------------------- proto_ops */

static void *imap_open(conn *c)
{
	struct imap_conn *ic = calloc(1, sizeof *ic);
	struct imap_session *s;
	struct imap_limits lim = {
		.max_line = 64 * 1024,
		.max_command = 1024 * 1024,
		.max_append = conn_settings(c)->max_message_size,
		.max_discard = 64 * 1024,
	};
	char caps[IMAP_CAPS_MAX];

	if (!ic)
		return NULL;
	s = &ic->s;
	s->c = c;
	s->state = IMAP_NOTAUTH;
	switch (conn_settings(c)->imap_nonsync_literals) {
	case IMAP_NONSYNC_PLUS:
		lim.literal_mode = IMAP_LITERAL_PLUS;
		break;
	case IMAP_NONSYNC_MINUS:
		lim.literal_mode = IMAP_LITERAL_MINUS;
		break;
	case IMAP_NONSYNC_OFF:
		lim.literal_mode = IMAP_LITERAL_SYNC_ONLY;
		break;
	}
	ic->literal_cfg = lim.literal_mode;
	imap_asm_init(&s->as, &lim);
	imap_cmd_init(&s->cmd, 0);
	s->cmd.tag.s = "";
	imap_wbuf_init(&s->out);
	conn_set_timeout(c, conn_preauth_timeout(c));
	imap_capabilities(s, caps, sizeof caps);
	conn_printf(c, "* OK [CAPABILITY %s] onebox ready\r\n", caps);
	return s;
}

/* A command that stopped on a congested connection goes on (imap_int.h,
 * s->resume). */
static void imap_drained(void *sess)
{
	struct imap_session *s = sess;
	void (*resume)(struct imap_session *) = s->resume;

	if (!resume || conn_closed(s->c))
		return;
	s->resume = NULL;
	/* The client reading a long answer is activity. */
	conn_set_timeout(s->c, s->state == IMAP_NOTAUTH ? conn_preauth_timeout(s->c)
	                                                : conn_idle_timeout(s->c));
	resume(s);
}

static void imap_timeout(void *sess)
{
	struct imap_session *s = sess;

	conn_puts(s->c, "* BYE Autologout; idle for too long\r\n");
}

static void imap_close(void *sess)
{
	struct imap_session *s = sess;

	imap_view_close(s);
	imap_asm_free(&s->as);
	imap_cmd_free(&s->cmd);
	imap_wbuf_free(&s->out);
	free(s->user);
	sasl_free(imap_conn_of(s)->sasl);
	free(imap_conn_of(s));
}

const struct proto_ops imap_ops = {
	.name = "imap",
	.refuse_busy = "* BYE Too many connections, try later\r\n",
	.open = imap_open,
	.line = imap_line,
	.bytes = imap_bytes,
	.line_too_long = imap_line_too_long,
	.drained = imap_drained,
	.timeout = imap_timeout,
	.close = imap_close,
};
