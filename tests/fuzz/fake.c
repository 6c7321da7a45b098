/*
 * fake.c - the in-memory conn_* services and store request machinery that
 * the POP3 and LMTP fuzz targets run their front-ends on (see fake.h).
 * Nothing here is fast or general: one connection at a time, one "loop" of
 * deferred completions, and checks that abort on any breach of proto.h.
 */
#include "tests/fuzz/fake.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fake_options fake;

static int fake_store_dummy;
store *const fake_store = (store *)&fake_store_dummy;

/* ------------------------------------------------------------ the loop */

struct fake_task {
	void (*fn)(void *arg);
	void *arg;
	struct fake_task *next;
};

static struct fake_task *tasks_head, *tasks_tail;

static void fake_defer(void (*fn)(void *), void *arg)
{
	struct fake_task *t = malloc(sizeof *t);

	if (!t)
		abort();
	t->fn = fn;
	t->arg = arg;
	t->next = NULL;
	if (tasks_tail)
		tasks_tail->next = t;
	else
		tasks_head = t;
	tasks_tail = t;
}

static bool fake_run_one(void)
{
	struct fake_task *t = tasks_head;

	if (!t)
		return false;
	tasks_head = t->next;
	if (!tasks_head)
		tasks_tail = NULL;
	t->fn(t->arg);
	free(t);
	return true;
}

static void fake_fail(const char *what)
{
	fprintf(stderr, "fake server: contract broken: %s\n", what);
	abort();
}

/* ---------------------------------------------------------- connection */

struct conn {
	const struct proto_ops *ops;
	void *sess;
	char *in;             /* the client's bytes, writable */
	size_t in_len, in_off;
	bool bytes_mode;
	bool paused;
	bool closed;
	bool discarding;      /* dropping the rest of an over-long line */
	bool tls;
	unsigned holds;
	size_t queued;        /* output not yet "sent" */
	bool echo;            /* FUZZ_ECHO: copy output to stderr */
};

static conn the_conn;
static int read_txns;

store *conn_store(conn *c) { return fake_store; }
const struct proto_settings *conn_settings(conn *c) { return &fake.set; }

void conn_write(conn *c, const void *p, size_t len)
{
	c->queued += len;
	if (c->echo)
		fwrite(p, 1, len, stderr);
}

void conn_puts(conn *c, const char *s)
{
	conn_write(c, s, strlen(s));
}

void conn_printf(conn *c, const char *fmt, ...)
{
	char *s;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		abort();
	conn_write(c, s, (size_t)n);
	free(s);
}

void conn_flush(conn *c) { (void)c; }
size_t conn_queued(const conn *c) { return c->queued; }
bool conn_congested(const conn *c) { return c->queued > fake.high_water; }
void conn_mode_line(conn *c) { c->bytes_mode = false; }
void conn_mode_bytes(conn *c) { c->bytes_mode = true; }
void conn_pause(conn *c) { c->paused = true; }
void conn_resume(conn *c) { c->paused = false; }
void conn_close(conn *c) { c->closed = true; }
bool conn_closed(const conn *c) { return c->closed; }
void conn_hold(conn *c) { c->holds++; }

void conn_release(conn *c)
{
	if (c->holds == 0)
		fake_fail("conn_release without conn_hold");
	c->holds--;
}

void conn_set_timeout(conn *c, unsigned secs) {}
unsigned conn_preauth_timeout(const conn *c) { return 60; }
unsigned conn_idle_timeout(const conn *c) { return 600; }
bool conn_is_tls(const conn *c) { return c->tls; }
bool conn_tls_available(const conn *c) { return fake.tls_available; }

int conn_starttls(conn *c)
{
	if (c->tls || !fake.tls_available)
		return -1;
	/* The handshake cannot happen here: like a client that sent
	 * cleartext after STARTTLS, the rest of the input is thrown away. */
	c->tls = true;
	c->in_off = c->in_len;
	return 0;
}

/* No front-end under fuzzing offers COMPRESS. */
int conn_compress_start(conn *c) { return -1; }
bool conn_compressed(const conn *c) { return false; }
void conn_compress_stop(conn *c) {}

const char *conn_peer(const conn *c) { return "fuzz:0"; }
void conn_set_user(conn *c, const char *user) {}

void conn_log(conn *c, int level, const char *fmt, ...)
{
	if (c->echo) {
		va_list ap;
		va_start(ap, fmt);
		fputs("[log] ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		va_end(ap);
	}
}

struct fake_auth {
	conn *c;
	conn_auth_cb cb;
	bool ok;
	uint32_t id;
	char user[16];
};

static void fake_auth_done(void *arg)
{
	struct fake_auth *a = arg;

	a->cb(a->c, a->c->sess, a->ok, a->ok ? a->user : NULL, a->id);
	conn_release(a->c);
	free(a);
}

struct fake_auth_arg {
	conn *c;
	conn_auth_arg_cb cb;
	void *arg;
	bool ok;
	uint32_t id;
	char user[256];
};

static void fake_auth_arg_done(void *p)
{
	struct fake_auth_arg *a = p;

	a->cb(a->c, a->arg, a->ok, a->ok ? a->user : NULL, a->id);
	conn_release(a->c);
	free(a);
}

/* The users of the fake: alice/secret (a mailbox with messages) and
 * bob/hunter2 (an empty one).  The ARG forms serve protocols/sasl.c; the
 * SCRAM lookup is the POP3 target's (it needs sasl.c to make a secret). */
static uint32_t fake_password_ok(const char *user, const char *password)
{
	if (fake.auth_fail)
		return 0;
	if (strcmp(user, "alice") == 0 && strcmp(password, "secret") == 0)
		return 1;
	if (strcmp(user, "bob") == 0 && strcmp(password, "hunter2") == 0)
		return 2;
	return 0;
}

static void fake_auth_queue(conn *c, bool ok, const char *user, uint32_t id,
                            conn_auth_arg_cb cb, void *arg)
{
	struct fake_auth_arg *a = calloc(1, sizeof *a);

	if (!a)
		abort();
	a->c = c;
	a->cb = cb;
	a->arg = arg;
	a->ok = ok;
	a->id = id;
	snprintf(a->user, sizeof a->user, "%s", user ? user : "");
	conn_hold(c);
	fake_defer(fake_auth_arg_done, a);
}

void conn_auth_password_arg(conn *c, const char *user, const char *password,
                            conn_auth_arg_cb cb, void *arg)
{
	uint32_t id = fake_password_ok(user, password);

	fake_auth_queue(c, id != 0, user, id, cb, arg);
}

void conn_auth_report(conn *c, const char *user, bool ok, uint32_t user_id,
                      conn_auth_arg_cb cb, void *arg)
{
	fake_auth_queue(c, ok, user, user_id, cb, arg);
}

/* Two users: alice/secret (mailbox with messages) and bob/hunter2 (empty). */
void conn_auth_password(conn *c, const char *user, const char *password,
                        conn_auth_cb cb)
{
	struct fake_auth *a = calloc(1, sizeof *a);

	if (!a)
		abort();
	a->c = c;
	a->cb = cb;
	if (!fake.auth_fail && strcmp(user, "alice") == 0 && strcmp(password, "secret") == 0) {
		a->ok = true;
		a->id = 1;
		strcpy(a->user, "alice");
	} else if (!fake.auth_fail && strcmp(user, "bob") == 0 &&
	           strcmp(password, "hunter2") == 0) {
		a->ok = true;
		a->id = 2;
		strcpy(a->user, "bob");
	}
	conn_hold(c);
	fake_defer(fake_auth_done, a);
}

/* --------------------------------------------------------------- store */

const char *store_strerror(int status)
{
	switch (status) {
	case STORE_OK: return "ok";
	case STORE_NOTFOUND: return "not found";
	case STORE_OVERQUOTA: return "over quota";
	case STORE_TEMPFAIL: return "temporary failure";
	default: return "error";
	}
}

store_txn *store_read_begin(store *s)
{
	if (s != fake_store)
		fake_fail("store_read_begin on a foreign store");
	if (fake.read_fail)
		return NULL;
	read_txns++;
	return (store_txn *)&read_txns;
}

void store_read_end(store_txn *t)
{
	if (t != (store_txn *)&read_txns || read_txns <= 0)
		fake_fail("store_read_end without a transaction");
	read_txns--;
}

store_req *store_req_new(void)
{
	return calloc(1, sizeof(store_req));
}

struct store_result *fake_req_op(store_req *r)
{
	if (r->nops == FAKE_MAX_OPS)
		fake_fail("request too long for the fake");
	struct store_result *res = &r->res[r->nops++];
	res->status = STORE_OK;
	res->uid = (uint32_t)(100 + r->nops);
	res->uidvalidity = 1234;
	return res;
}

void store_req_free(store_req *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nowned; i++)
		r->release(r->owned[i]);
	free(r);
}

size_t store_req_count(const store_req *r) { return r->nops; }

const struct store_result *store_req_result(const store_req *r, size_t i)
{
	if (i >= r->nops)
		fake_fail("store_req_result out of range");
	return &r->res[i];
}

int store_req_status(const store_req *r) { return r->status; }

static void fake_req_done(void *arg)
{
	store_req *r = arg;

	r->status = fake.req_status;
	for (size_t i = 0; i < r->nops; i++)
		r->res[i].status = r->status;
	r->cb(r, r->arg);
	store_req_free(r);
}

void store_req_submit(store *s, store_req *r, store_req_cb cb, void *arg)
{
	if (s != fake_store)
		fake_fail("store_req_submit on a foreign store");
	r->cb = cb;
	r->arg = arg;
	fake_defer(fake_req_done, r);
}

/* ------------------------------------------------------------- driving */

/* "#fuzz: word word ..." as the first line sets the options. */
static size_t fake_configure(const char *p, size_t len)
{
	static const char magic[] = "#fuzz:";
	memset(&fake, 0, sizeof fake);
	fake.set.hostname = "fuzz.example";
	fake.set.allow_plaintext = true;
	fake.set.pop3_mark_seen = true;
	fake.set.max_message_size = 1 << 20;
	fake.set.lmtp_max_recipients = 8;
	fake.req_status = STORE_OK;
	fake.max_line = 8192;
	fake.high_water = 64 * 1024;
	if (len < sizeof magic - 1 || memcmp(p, magic, sizeof magic - 1) != 0)
		return 0;
	const char *nl = memchr(p, '\n', len);
	size_t end = nl ? (size_t)(nl - p) : len;
	size_t i = sizeof magic - 1;
	while (i < end) {
		while (i < end && p[i] == ' ')
			i++;
		size_t s = i;
		while (i < end && p[i] != ' ')
			i++;
		size_t n = i - s;
#define IS(w) (n == sizeof(w) - 1 && memcmp(p + s, w, n) == 0)
		if (IS("tls"))
			fake.tls_available = true;
		else if (IS("secure"))
			fake.is_tls = true;
		else if (IS("no-plaintext"))
			fake.set.allow_plaintext = false;
		else if (IS("fail-store"))
			fake.req_status = STORE_TEMPFAIL;
		else if (IS("over-quota"))
			fake.req_status = STORE_OVERQUOTA;
		else if (IS("fail-read"))
			fake.read_fail = true;
		else if (IS("fail-auth"))
			fake.auth_fail = true;
		else if (IS("short-lines"))
			fake.max_line = 64;
		else if (IS("slow-reader"))
			fake.high_water = 512;
		else if (IS("flag"))
			fake.set.pop3_delete_mode = POP3_DELETE_FLAG;
		else if (IS("trash"))
			fake.set.pop3_delete_mode = POP3_DELETE_TRASH;
		else if (IS("cyrus"))
			fake.set.pop3_uidl_format = POP3_UIDL_CYRUS;
		else if (IS("courier"))
			fake.set.pop3_uidl_format = POP3_UIDL_COURIER;
		else if (IS("uw"))
			fake.set.pop3_uidl_format = POP3_UIDL_UW;
		else if (IS("lock"))
			fake.set.pop3_lock_session = true;
		else if (IS("no-seen"))
			fake.set.pop3_mark_seen = false;
		else if (IS("small-messages"))
			fake.set.max_message_size = 100;
		else if (IS("no-size-limit"))
			fake.set.max_message_size = 0;
		else if (IS("one-rcpt"))
			fake.set.lmtp_max_recipients = 1;
		else if (IS("no-hostname"))
			fake.set.hostname = NULL;
#undef IS
	}
	return nl ? end + 1 : len;
}

/* Hand buffered input to the front-end, as server/conn.c process_input
 * does, until it is paused, congested, closed or out of input. */
static void fake_input(conn *c)
{
	while (!c->closed && !c->paused && !conn_congested(c)) {
		size_t avail = c->in_len - c->in_off;
		char *p = c->in + c->in_off;

		if (c->bytes_mode) {
			if (avail == 0)
				return;
			size_t used = c->ops->bytes(c->sess, p, avail);
			if (used > avail)
				fake_fail("ops->bytes used more than it was given");
			c->in_off += used;
			if (used == 0 && c->bytes_mode)
				return;
			continue;
		}
		char *lf = avail ? memchr(p, '\n', avail) : NULL;
		if (c->discarding) {
			if (!lf) {
				c->in_off = c->in_len;
				return;
			}
			c->in_off += (size_t)(lf - p) + 1;
			c->discarding = false;
			c->ops->line_too_long(c->sess);
			continue;
		}
		if (!lf) {
			if (avail > fake.max_line + 1) {
				c->discarding = true;
				c->in_off = c->in_len;
				continue;
			}
			return;
		}
		size_t n = (size_t)(lf - p), len = n;
		if (len > 0 && p[len - 1] == '\r')
			len--;
		c->in_off += n + 1;
		if (len > fake.max_line) {
			c->ops->line_too_long(c->sess);
			continue;
		}
		p[len] = '\0';
		c->ops->line(c->sess, p, len);
	}
}

void fake_session(const struct proto_ops *ops, const uint8_t *data, size_t len)
{
	conn *c = &the_conn;
	size_t skip = fake_configure((const char *)data, len);

	memset(c, 0, sizeof *c);
	c->ops = ops;
	c->tls = fake.is_tls;
	c->echo = getenv("FUZZ_ECHO") != NULL;
	c->in_len = len - skip;
	c->in = malloc(c->in_len + 1);
	if (!c->in)
		abort();
	memcpy(c->in, data + skip, c->in_len);
	c->in[c->in_len] = '\0';
	read_txns = 0;

	c->sess = ops->open(c);
	if (!c->sess)
		abort();
	/* The loop: input, draining, completions, until nothing moves. */
	for (;;) {
		fake_input(c);
		if (read_txns != 0)
			fake_fail("read transaction left open after a callback");
		if (c->queued > fake.high_water) {
			c->queued = 0;
			if (!c->closed)
				ops->drained(c->sess);
			continue;
		}
		c->queued = 0;
		if (fake_run_one())
			continue;
		break;
	}
	/* The client goes away (or was sent away); completions still run. */
	c->closed = true;
	while (fake_run_one())
		;
	if (read_txns != 0)
		fake_fail("read transaction left open");
	if (c->holds != 0)
		fake_fail("conn_hold never released");
	ops->close(c->sess);
	c->sess = NULL;
	free(c->in);
	c->in = NULL;
}
