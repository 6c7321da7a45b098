/*
 * test_store.c - unit tests of store/: users, deliveries, single-instance
 * bodies, CRLF normalisation, flags and the change feed, moves, quota,
 * group commit with a failing request, persistence, refusal of foreign
 * folders, watches (in-process and from another process), map growth,
 * keywords and IMAP STORE/APPEND, and the MIME blobs stored at ingest.
 * Each test works in its own mkdtemp folder under /tmp.  Plain C: CHECK
 * counts and reports file:line; the exit status is non-zero on a failure.
 */

#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "store/mime.h"
#include "store/store.h"
#include "store/store_int.h"

#define CHECK_EQ(a, b)                                                       \
	do {                                                                 \
		long long a_ = (long long)(a), b_ = (long long)(b);          \
		if (a_ == b_) {                                              \
			passed++;                                            \
		} else {                                                     \
			failed++;                                            \
			fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", \
			        __FILE__, __LINE__, #a, a_, #b, b_);         \
		}                                                            \
	} while (0)

/* ---------------------------------------------------------------- helpers */

static char *tmpdir(void)
{
	char tmpl[] = "/tmp/onebox-test-XXXXXX";
	char *d = mkdtemp(tmpl);
	if (!d) {
		perror("mkdtemp");
		exit(2);
	}
	return strdup(d);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	return remove(path);
}

static void rmtree(char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
}

static store *open_sync(const char *dir, const struct store_options *opt)
{
	store *s = NULL;
	char err[512];
	int rc = store_open(&s, dir, opt, NULL, err, sizeof err);
	if (rc != STORE_OK)
		fprintf(stderr, "store_open: %s\n", err);
	CHECK_EQ(rc, STORE_OK);
	return s;
}

static store_msg *msg_of(const char *text, size_t len)
{
	store_msg *m = store_msg_new();
	store_msg_append(m, text, len);
	store_msg_finish(m);
	return m;
}

static int add_user(store *s, const char *name)
{
	store_req *r = store_req_new();
	store_req_user_add(r, name, "$6$salt$hash");
	return store_req_run(s, r);
}

static int deliver(store *s, const char *user, const char *mbox, const char *text,
                   uint32_t flags)
{
	store_msg *m = msg_of(text, strlen(text));
	store_req *r = store_req_new();
	store_req_deliver(r, user, mbox, m, flags, 0);
	store_msg_unref(m);
	return store_req_run(s, r);
}

static int one_op(store *s, store_req *r)
{
	return store_req_run(s, r);
}

static uint32_t user_id(store *s, const char *name)
{
	store_txn *t = store_read_begin(s);
	struct store_user u = { 0 };
	int st = store_user_get(t, name, &u);
	store_read_end(t);
	return st == STORE_OK ? u.id : 0;
}

static struct store_mailbox mbox(store *s, const char *user, const char *name)
{
	struct store_mailbox m;
	memset(&m, 0, sizeof m);
	store_txn *t = store_read_begin(s);
	struct store_user u;
	if (store_user_get(t, user, &u) == STORE_OK)
		store_mailbox_get(t, u.id, name, &m);
	m.name = NULL;          /* points into the ended txn */
	store_read_end(t);
	return m;
}

static int msg_get(store *s, uint32_t mb, uint32_t uid, struct store_message *out)
{
	store_txn *t = store_read_begin(s);
	int st = store_message_get(t, mb, uid, out);
	store_read_end(t);
	return st;
}

/* Does body ID exist, and if so do its bytes equal TEXT? */
static int body_state(store *s, const uint8_t id[32], const char *text)
{
	store_txn *t = store_read_begin(s);
	const char *p;
	size_t n;
	int st = store_body_get(t, id, &p, &n);
	int r = st == STORE_NOTFOUND ? 0 : st != STORE_OK ? -1
	        : (text && (n != strlen(text) || memcmp(p, text, n) != 0)) ? -2 : 1;
	store_read_end(t);
	return r;
}

/* ------------------------------------------------------------------ tests */

static int collect_user(const struct store_user *u, void *arg)
{
	char *buf = arg;
	strcat(buf, u->name);
	strcat(buf, ",");
	return 0;
}

static int collect_mbox(const struct store_mailbox *m, void *arg)
{
	char *buf = arg;
	char one[300];
	snprintf(one, sizeof one, "%s:%u,", m->name, m->special_use);
	strcat(buf, one);
	return 0;
}

static int collect_sub(const char *name, void *arg)
{
	char *buf = arg;
	strcat(buf, name);
	strcat(buf, ",");
	return 0;
}

static int stop_after_two(const char *name, void *arg)
{
	int *n = arg;
	(void)name;
	return ++*n == 2;
}

/* USER's subscriptions as "a,b,", in the store's order; "?" on failure. */
static const char *subs_of(store *s, const char *user)
{
	static char buf[2048];
	buf[0] = '\0';
	store_txn *t = store_read_begin(s);
	struct store_user u;
	if (store_user_get(t, user, &u) != STORE_OK ||
	    store_subscription_foreach(t, u.id, collect_sub, buf) != STORE_OK)
		strcpy(buf, "?");
	store_read_end(t);
	return buf;
}

static int subscribed(store *s, const char *user, const char *name)
{
	store_txn *t = store_read_begin(s);
	struct store_user u;
	int st = store_user_get(t, user, &u);
	if (st == STORE_OK)
		st = store_subscribed(t, u.id, name);
	store_read_end(t);
	return st;
}

static int subscribe(store *s, const char *user, const char *name, bool on)
{
	store_req *r = store_req_new();
	store_req_subscribe(r, user, name, on);
	return store_req_run(s, r);
}

static void test_users(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	CHECK_EQ(add_user(s, "bob@example.com"), STORE_OK);
	CHECK_EQ(add_user(s, "alice"), STORE_EXISTS);
	CHECK_EQ(add_user(s, ""), STORE_INVALID);
	CHECK_EQ(add_user(s, "a\x01z"), STORE_INVALID);
	char longname[300];
	memset(longname, 'x', 256);
	longname[256] = '\0';
	CHECK_EQ(add_user(s, longname), STORE_INVALID);
	longname[255] = '\0';
	CHECK_EQ(add_user(s, longname), STORE_OK);

	store_req *r = store_req_new();
	store_req_user_passwd(r, "alice", "$y$new");
	CHECK_EQ(one_op(s, r), STORE_OK);
	r = store_req_new();
	store_req_user_passwd(r, "nobody", "$y$new");
	CHECK_EQ(one_op(s, r), STORE_NOTFOUND);

	store_txn *t = store_read_begin(s);
	CHECK(t != NULL);
	struct store_user u;
	CHECK_EQ(store_user_get(t, "alice", &u), STORE_OK);
	CHECK(strcmp(u.pass_hash, "$y$new") == 0);
	CHECK(strcmp(u.name, "alice") == 0);
	CHECK_EQ(u.used_bytes, 0);
	char list[1024] = "";
	CHECK_EQ(store_user_foreach(t, collect_user, list), STORE_OK);
	char want[1024];
	snprintf(want, sizeof want, "alice,bob@example.com,%s,", longname);
	CHECK(strcmp(list, want) == 0);

	char mbs[1024] = "";
	CHECK_EQ(store_mailbox_foreach(t, u.id, collect_mbox, mbs), STORE_OK);
	CHECK(strcmp(mbs, "Archive:16,Drafts:2,INBOX:0,Junk:8,Sent:1,Trash:4,") == 0);
	struct store_mailbox m, m2;
	CHECK_EQ(store_mailbox_by_use(t, u.id, STORE_USE_TRASH, &m), STORE_OK);
	CHECK(strcmp(m.name, "Trash") == 0);
	CHECK_EQ(store_mailbox_get(t, u.id, "inbox", &m), STORE_OK);
	CHECK(strcmp(m.name, "INBOX") == 0);
	CHECK_EQ(m.uidnext, 1);
	CHECK(m.uidvalidity > 0);
	CHECK_EQ(store_mailbox_get(t, u.id, "Sent", &m2), STORE_OK);
	CHECK(m2.uidvalidity != m.uidvalidity);
	CHECK_EQ(store_mailbox_get(t, u.id, "Nope", &m2), STORE_NOTFOUND);
	store_read_end(t);

	r = store_req_new();
	store_req_user_del(r, "bob@example.com");
	CHECK_EQ(one_op(s, r), STORE_OK);
	r = store_req_new();
	store_req_user_del(r, "bob@example.com");
	CHECK_EQ(one_op(s, r), STORE_NOTFOUND);
	CHECK_EQ(user_id(s, "bob@example.com"), 0);
	/* A new user never gets a deleted user's id. */
	CHECK_EQ(add_user(s, "bob@example.com"), STORE_OK);
	CHECK(user_id(s, "bob@example.com") > user_id(s, "alice"));

	/* A failing op rolls back the ops before it in the same request. */
	r = store_req_new();
	store_req_user_add(r, "carol", "");
	store_msg *msg = msg_of("x", 1);
	store_req_deliver(r, "nobody", NULL, msg, 0, 0);
	store_msg_unref(msg);
	CHECK_EQ(one_op(s, r), STORE_NOTFOUND);
	CHECK_EQ(user_id(s, "carol"), 0);
	store_close(s);
	rmtree(dir);
}

static const char MSG1[] = "From: a@example.com\r\nSubject: one\r\n\r\nHello\r\nworld\r\n";

static void test_deliver(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	CHECK_EQ(deliver(s, "alice", NULL, MSG1, 0), STORE_OK);
	CHECK_EQ(deliver(s, "alice", "INBOX", "Subject: two\r\n\r\nx\r\n", STORE_F_SEEN), STORE_OK);
	CHECK_EQ(deliver(s, "alice", "Sent", "Subject: three\r\n\r\ny\r\n", STORE_F_SEEN), STORE_OK);
	CHECK_EQ(deliver(s, "nobody", NULL, MSG1, 0), STORE_NOTFOUND);
	CHECK_EQ(deliver(s, "alice", "NoSuchBox", MSG1, 0), STORE_NOTFOUND);

	struct store_mailbox in = mbox(s, "alice", "INBOX");
	CHECK_EQ(in.messages, 2);
	CHECK_EQ(in.unseen, 1);
	CHECK_EQ(in.uidnext, 3);
	CHECK_EQ(in.bytes, strlen(MSG1) + strlen("Subject: two\r\n\r\nx\r\n"));
	struct store_mailbox sent = mbox(s, "alice", "Sent");
	CHECK_EQ(sent.messages, 1);
	CHECK_EQ(sent.uidnext, 2);

	struct store_message m;
	CHECK_EQ(msg_get(s, in.id, 1, &m), STORE_OK);
	CHECK_EQ(m.uid, 1);
	CHECK_EQ(m.size, strlen(MSG1));
	CHECK_EQ(m.lines, 5);
	CHECK_EQ(m.header_size, strlen("From: a@example.com\r\nSubject: one\r\n\r\n"));
	CHECK_EQ(m.flags, 0);
	CHECK(m.internal_date > 0);
	CHECK_EQ(body_state(s, m.body_id, MSG1), 1);
	CHECK_EQ(msg_get(s, in.id, 3, &m), STORE_NOTFOUND);

	store_txn *t = store_read_begin(s);
	struct store_user u;
	CHECK_EQ(store_user_get(t, "alice", &u), STORE_OK);
	CHECK_EQ(u.used_messages, 3);
	store_read_end(t);

	/* Bodies are numbered as they are written: three bodies, three
	 * rising numbers, and the id is eight zero octets and the number. */
	struct store_message m2, m3;
	CHECK_EQ(msg_get(s, in.id, 1, &m), STORE_OK);
	CHECK_EQ(msg_get(s, in.id, 2, &m2), STORE_OK);
	CHECK_EQ(msg_get(s, sent.id, 1, &m3), STORE_OK);
	CHECK_EQ(store_body_number(m.body_id), 1);
	CHECK_EQ(store_body_number(m2.body_id), 2);
	CHECK_EQ(store_body_number(m3.body_id), 3);
	store_close(s);
	/* Numbering goes on after a reopen (the store keeps the next one). */
	s = open_sync(dir, NULL);
	CHECK_EQ(deliver(s, "alice", NULL, "Subject: four\r\n\r\nz\r\n", 0), STORE_OK);
	CHECK_EQ(msg_get(s, in.id, 3, &m), STORE_OK);
	CHECK_EQ(store_body_number(m.body_id), 4);
	store_close(s);
	rmtree(dir);
}

static void test_single_instance(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	CHECK_EQ(add_user(s, "bob"), STORE_OK);
	/* One message to two recipients in one request, as LMTP does. */
	store_msg *msg = msg_of(MSG1, strlen(MSG1));
	store_req *r = store_req_new();
	store_req_deliver(r, "alice", NULL, msg, 0, 0);
	store_req_deliver(r, "alice", NULL, msg, 0, 0);
	store_req_deliver(r, "bob", NULL, msg, 0, 0);
	store_msg_unref(msg);
	CHECK_EQ(store_req_run(s, r), STORE_OK);
	struct store_mailbox in = mbox(s, "alice", "INBOX");
	struct store_message a, b;
	CHECK_EQ(msg_get(s, in.id, 1, &a), STORE_OK);
	CHECK_EQ(msg_get(s, in.id, 2, &b), STORE_OK);
	CHECK(memcmp(a.body_id, b.body_id, 32) == 0);

	r = store_req_new();
	store_req_expunge(r, in.id, 1);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(body_state(s, a.body_id, MSG1), 1);
	r = store_req_new();
	store_req_expunge(r, in.id, 2);
	store_req_expunge(r, in.id, 2);         /* already gone: skipped */
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(body_state(s, a.body_id, MSG1), 1);    /* bob still has it */
	r = store_req_new();
	store_req_user_del(r, "bob");
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(body_state(s, a.body_id, NULL), 0);
	in = mbox(s, "alice", "INBOX");
	CHECK_EQ(in.messages, 0);
	CHECK_EQ(in.bytes, 0);
	store_close(s);
	rmtree(dir);
}

/* Append PARTS (NULL-terminated) and compare with WANT. */
static void crlf_case(int line, const char *const *parts, const char *want, size_t want_lines,
                      size_t want_hdr)
{
	store_msg *m = store_msg_new();
	for (size_t i = 0; parts[i]; i++)
		store_msg_append(m, parts[i], strlen(parts[i]));
	size_t n = store_msg_finish(m);
	if (n != strlen(want) || memcmp(store_msg_data(m), want, n) != 0) {
		failed++;
		fprintf(stderr, "%s:%d: normalised to \"%s\"\n", __FILE__, line, store_msg_data(m));
	} else {
		passed++;
	}
	CHECK_EQ(store_msg_size(m), strlen(want));
	/* Lines and header size, checked through a delivery. */
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	add_user(s, "u");
	store_req *r = store_req_new();
	store_req_deliver(r, "u", NULL, m, 0, 0);
	CHECK_EQ(store_req_run(s, r), STORE_OK);
	struct store_mailbox in_box = mbox(s, "u", "INBOX");
	struct store_message sm;
	CHECK_EQ(msg_get(s, in_box.id, 1, &sm), STORE_OK);
	if (sm.lines != want_lines || sm.header_size != want_hdr) {
		failed++;
		fprintf(stderr, "%s:%d: lines %u header %u, want %zu %zu\n", __FILE__, line,
		        sm.lines, sm.header_size, want_lines, want_hdr);
	} else {
		passed++;
	}
	CHECK_EQ(body_state(s, sm.body_id, want), 1);
	store_close(s);
	rmtree(dir);
	store_msg_unref(m);
}

static void test_crlf(void)
{
	crlf_case(__LINE__, (const char *const[]){ "a\nb", NULL }, "a\r\nb", 2, 4);
	crlf_case(__LINE__, (const char *const[]){ "a\rb", NULL }, "a\r\nb", 2, 4);
	crlf_case(__LINE__, (const char *const[]){ "a\r\nb\r\n", NULL }, "a\r\nb\r\n", 2, 6);
	crlf_case(__LINE__, (const char *const[]){ "a\r", "\nb", NULL }, "a\r\nb", 2, 4);
	crlf_case(__LINE__, (const char *const[]){ "a\r", "b", NULL }, "a\r\nb", 2, 4);
	crlf_case(__LINE__, (const char *const[]){ "a\r", "\r", "\n", NULL }, "a\r\n\r\n", 2, 5);
	crlf_case(__LINE__, (const char *const[]){ "a\r", NULL }, "a\r\n", 1, 3);
	crlf_case(__LINE__, (const char *const[]){ "\n\n", NULL }, "\r\n\r\n", 2, 2);
	crlf_case(__LINE__, (const char *const[]){ "H: v\n\nbody\n", NULL },
	          "H: v\r\n\r\nbody\r\n", 3, 8);
	crlf_case(__LINE__, (const char *const[]){ "H: v\r", "\n\r", "\nbody", NULL },
	          "H: v\r\n\r\nbody", 3, 8);
	crlf_case(__LINE__, (const char *const[]){ NULL }, "", 0, 0);
	crlf_case(__LINE__, (const char *const[]){ "", "", NULL }, "", 0, 0);
	/* Byte by byte, with a NUL inside. */
	store_msg *m = store_msg_new();
	const char src[] = "x\ry\n\0z\r";
	for (size_t i = 0; i < sizeof src - 1; i++)
		store_msg_append(m, src + i, 1);
	CHECK_EQ(store_msg_finish(m), 10);
	CHECK(memcmp(store_msg_data(m), "x\r\ny\r\n\0z\r\n", 10) == 0);
	store_msg_append(m, "more", 4);         /* ignored after finish */
	CHECK_EQ(store_msg_size(m), 10);
	store_msg_unref(m);
}

/* The rule of store_msg_append, one octet at a time: the reference the
 * word-at-a-time version must agree with. */
static size_t crlf_reference(const char *in, size_t len, char *out)
{
	size_t o = 0;
	bool cr = false;

	for (size_t i = 0; i < len; i++) {
		if (cr) {
			cr = false;
			out[o++] = '\r';
			out[o++] = '\n';
			if (in[i] == '\n')
				continue;
		}
		if (in[i] == '\r')
			cr = true;
		else if (in[i] == '\n')
			o += (size_t)(memcpy(out + o, "\r\n", 2), 2);
		else
			out[o++] = in[i];
	}
	if (cr)
		o += (size_t)(memcpy(out + o, "\r\n", 2), 2);
	return o;
}

/* Random text rich in CR, LF and long plain runs, cut into random chunks:
 * the normalised bytes must be the reference's. */
static void test_crlf_random(void)
{
	static const char alphabet[] = "\r\n\r\nab\0cdefghij";
	char in[3000], want[6000];
	unsigned seed = 12345;
	int bad = 0;

	for (int round = 0; round < 400; round++) {
		size_t len = (size_t)(rand_r(&seed) % sizeof in);
		/* Runs of plain text, short in some rounds and long in others,
		 * so the sixteen- and eight-octet paths and the tail are taken. */
		unsigned plain = round % 3 == 0 ? 60 : 4;
		for (size_t i = 0; i < len; i++) {
			if (rand_r(&seed) % plain)
				in[i] = (char)('A' + rand_r(&seed) % 26);
			else
				in[i] = alphabet[rand_r(&seed) % (sizeof alphabet - 1)];
		}
		size_t wlen = crlf_reference(in, len, want);
		store_msg *m = store_msg_new();
		for (size_t at = 0; at < len;) {
			size_t n = 1 + (size_t)(rand_r(&seed) % 40);
			if (rand_r(&seed) % 8 == 0)
				n = len - at;
			if (n > len - at)
				n = len - at;
			store_msg_append(m, in + at, n);
			at += n;
		}
		size_t got = store_msg_finish(m);
		store_msg_seal(m);
		struct store_msg_info info;
		if (got != wlen || memcmp(store_msg_data(m), want, wlen) != 0 ||
		    !store_msg_info_get(m, &info) || info.size != wlen)
			bad++;
		store_msg_unref(m);
	}
	CHECK_EQ(bad, 0);
}

struct changes {
	int n;
	uint64_t modseq[16];
	uint32_t uid[16];
	int kind[16];
};

static int collect_change(const struct store_change *c, void *arg)
{
	struct changes *ch = arg;
	if (ch->n < 16) {
		ch->modseq[ch->n] = c->modseq;
		ch->uid[ch->n] = c->uid;
		ch->kind[ch->n] = c->kind;
	}
	ch->n++;
	return 0;
}

static struct changes changes_since(store *s, uint32_t mb, uint64_t since)
{
	struct changes ch;
	memset(&ch, 0, sizeof ch);
	store_txn *t = store_read_begin(s);
	CHECK_EQ(store_changes_since(t, mb, since, collect_change, &ch), STORE_OK);
	store_read_end(t);
	return ch;
}

static void test_flags_modseq(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(deliver(s, "alice", NULL, i == 1 ? "two\r\n" : "msg\r\n", 0), STORE_OK);
	struct store_mailbox in = mbox(s, "alice", "INBOX");
	uint64_t hms = in.highestmodseq;
	CHECK(hms >= 3);
	struct store_message m1, m2;
	CHECK_EQ(msg_get(s, in.id, 1, &m1), STORE_OK);
	CHECK_EQ(msg_get(s, in.id, 2, &m2), STORE_OK);
	CHECK(m1.modseq > 0 && m2.modseq > m1.modseq && hms == m2.modseq + 1);

	store_req *r = store_req_new();
	store_req_flags(r, in.id, 2, STORE_F_SEEN | STORE_F_DELETED, 0);
	CHECK_EQ(one_op(s, r), STORE_OK);
	in = mbox(s, "alice", "INBOX");
	CHECK_EQ(in.highestmodseq, hms + 1);
	CHECK_EQ(in.unseen, 2);
	CHECK_EQ(in.deleted, 1);
	/* A no-op flags change bumps nothing; a gone UID is skipped. */
	r = store_req_new();
	store_req_flags(r, in.id, 2, STORE_F_SEEN, 0);
	store_req_flags(r, in.id, 99, STORE_F_SEEN, 0);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(mbox(s, "alice", "INBOX").highestmodseq, hms + 1);

	struct changes ch = changes_since(s, in.id, hms);
	CHECK_EQ(ch.n, 1);
	CHECK_EQ(ch.uid[0], 2);
	CHECK_EQ(ch.modseq[0], hms + 1);
	CHECK_EQ(ch.kind[0], STORE_CHANGE_FLAGS);

	r = store_req_new();
	store_req_expunge(r, in.id, 3);
	CHECK_EQ(one_op(s, r), STORE_OK);
	in = mbox(s, "alice", "INBOX");
	CHECK_EQ(in.highestmodseq, hms + 2);
	CHECK_EQ(in.messages, 2);
	CHECK_EQ(in.unseen, 1);
	ch = changes_since(s, in.id, hms);
	CHECK_EQ(ch.n, 2);
	CHECK_EQ(ch.uid[1], 3);
	CHECK_EQ(ch.kind[1], STORE_CHANGE_EXPUNGE);
	/* From the start: uid 1 once, uid 2 only at its latest modseq, uid 3
	 * only as a tombstone. */
	ch = changes_since(s, in.id, 0);
	CHECK_EQ(ch.n, 3);
	CHECK_EQ(ch.uid[0], 1);
	CHECK_EQ(ch.uid[1], 2);
	CHECK_EQ(ch.modseq[1], hms + 1);
	CHECK_EQ(ch.uid[2], 3);
	CHECK_EQ(ch.kind[2], STORE_CHANGE_EXPUNGE);
	ch = changes_since(s, in.id, hms + 2);
	CHECK_EQ(ch.n, 0);

	/* Remove flags. */
	r = store_req_new();
	store_req_flags(r, in.id, 2, 0, STORE_F_DELETED);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(msg_get(s, in.id, 2, &m2), STORE_OK);
	CHECK_EQ(m2.flags, STORE_F_SEEN);
	CHECK_EQ(m2.modseq, hms + 3);
	CHECK_EQ(mbox(s, "alice", "INBOX").deleted, 0);
	store_close(s);
	rmtree(dir);
}

static void test_move_copy(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	CHECK_EQ(deliver(s, "alice", NULL, MSG1, STORE_F_SEEN | STORE_F_DELETED), STORE_OK);
	struct store_mailbox in = mbox(s, "alice", "INBOX");
	struct store_mailbox trash = mbox(s, "alice", "Trash");
	struct store_message orig;
	CHECK_EQ(msg_get(s, in.id, 1, &orig), STORE_OK);

	store_req *r = store_req_new();
	store_req_move(r, in.id, 1, trash.id, STORE_F_DELETED);
	CHECK_EQ(one_op(s, r), STORE_OK);
	in = mbox(s, "alice", "INBOX");
	trash = mbox(s, "alice", "Trash");
	CHECK_EQ(in.messages, 0);
	CHECK_EQ(in.deleted, 0);
	CHECK_EQ(in.bytes, 0);
	CHECK_EQ(trash.messages, 1);
	CHECK_EQ(trash.deleted, 0);
	CHECK_EQ(trash.bytes, strlen(MSG1));
	struct store_message moved;
	CHECK_EQ(msg_get(s, in.id, 1, &moved), STORE_NOTFOUND);
	CHECK_EQ(msg_get(s, trash.id, 1, &moved), STORE_OK);
	CHECK_EQ(moved.flags, STORE_F_SEEN);
	CHECK_EQ(moved.internal_date, orig.internal_date);
	CHECK(memcmp(moved.body_id, orig.body_id, 32) == 0);
	struct changes ch = changes_since(s, in.id, 0);
	CHECK_EQ(ch.n, 1);
	CHECK_EQ(ch.kind[0], STORE_CHANGE_EXPUNGE);
	struct store_user u;
	store_txn *t = store_read_begin(s);
	CHECK_EQ(store_user_get(t, "alice", &u), STORE_OK);
	CHECK_EQ(u.used_messages, 1);
	store_read_end(t);

	/* Copy back: a second reference; the body survives one expunge. */
	r = store_req_new();
	store_req_copy(r, trash.id, 1, in.id);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(mbox(s, "alice", "INBOX").messages, 1);
	CHECK_EQ(mbox(s, "alice", "INBOX").uidnext, 3);     /* UIDs never reused */
	r = store_req_new();
	store_req_expunge(r, trash.id, 1);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(body_state(s, orig.body_id, MSG1), 1);
	r = store_req_new();
	store_req_expunge(r, in.id, 2);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(body_state(s, orig.body_id, NULL), 0);
	store_close(s);
	rmtree(dir);
}

static void test_mailboxes(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	store_req *r = store_req_new();
	store_req_mailbox_create(r, "alice", "Lists/ietf", 0);
	CHECK_EQ(one_op(s, r), STORE_OK);
	r = store_req_new();
	store_req_mailbox_create(r, "alice", "inbox", 0);
	CHECK_EQ(one_op(s, r), STORE_EXISTS);
	r = store_req_new();
	store_req_mailbox_create(r, "alice", "bad\nname", 0);
	CHECK_EQ(one_op(s, r), STORE_INVALID);
	CHECK_EQ(deliver(s, "alice", "Lists/ietf", MSG1, 0), STORE_OK);
	struct store_mailbox a = mbox(s, "alice", "Lists/ietf");
	CHECK(a.id != 0);
	r = store_req_new();
	store_req_mailbox_rename(r, a.id, "Lists/IETF");
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(mbox(s, "alice", "Lists/ietf").id, 0);
	struct store_mailbox b = mbox(s, "alice", "Lists/IETF");
	CHECK_EQ(b.id, a.id);
	CHECK_EQ(b.uidvalidity, a.uidvalidity);
	CHECK_EQ(b.messages, 1);
	r = store_req_new();
	store_req_mailbox_delete(r, mbox(s, "alice", "INBOX").id);
	CHECK_EQ(one_op(s, r), STORE_INVALID);
	r = store_req_new();
	store_req_mailbox_delete(r, b.id);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(mbox(s, "alice", "Lists/IETF").id, 0);
	store_txn *t = store_read_begin(s);
	struct store_user u;
	CHECK_EQ(store_user_get(t, "alice", &u), STORE_OK);
	CHECK_EQ(u.used_messages, 0);
	CHECK_EQ(u.used_bytes, 0);
	store_read_end(t);
	/* Recreated: a new UIDVALIDITY, even within the same second. */
	r = store_req_new();
	store_req_mailbox_create(r, "alice", "Lists/IETF", 0);
	CHECK_EQ(one_op(s, r), STORE_OK);
	struct store_mailbox c = mbox(s, "alice", "Lists/IETF");
	CHECK(c.uidvalidity > b.uidvalidity);
	CHECK(c.id != b.id);
	CHECK_EQ(c.messages, 0);
	store_close(s);
	rmtree(dir);
}

static void test_quota(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	store_req *r = store_req_new();
	store_req_user_quota(r, "alice", 100, 0);
	CHECK_EQ(one_op(s, r), STORE_OK);
	char fifty[51], sixty[61];
	memset(fifty, 'a', 50);
	fifty[50] = '\0';
	memset(sixty, 'b', 60);
	sixty[60] = '\0';
	CHECK_EQ(deliver(s, "alice", NULL, fifty, 0), STORE_OK);
	CHECK_EQ(deliver(s, "alice", NULL, sixty, 0), STORE_OVERQUOTA);
	struct store_mailbox in = mbox(s, "alice", "INBOX");
	CHECK_EQ(in.messages, 1);
	CHECK_EQ(in.uidnext, 2);
	CHECK_EQ(in.bytes, 50);
	store_txn *t = store_read_begin(s);
	struct store_user u;
	CHECK_EQ(store_user_get(t, "alice", &u), STORE_OK);
	CHECK_EQ(u.used_bytes, 50);
	CHECK_EQ(u.quota_bytes, 100);
	store_read_end(t);
	/* The refused body was not stored: the next number is free. */
	uint8_t next_id[32] = { 0 };
	next_id[15] = 2;
	CHECK_EQ(body_state(s, next_id, NULL), 0);

	r = store_req_new();
	store_req_user_quota(r, "alice", 0, 1);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(deliver(s, "alice", NULL, "small", 0), STORE_OVERQUOTA);
	r = store_req_new();
	store_req_copy(r, in.id, 1, mbox(s, "alice", "Archive").id);
	CHECK_EQ(one_op(s, r), STORE_OVERQUOTA);
	r = store_req_new();
	store_req_user_quota(r, "alice", 0, 0);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(deliver(s, "alice", NULL, sixty, 0), STORE_OK);
	CHECK_EQ(body_state(s, next_id, sixty), 1);
	store_close(s);
	rmtree(dir);
}

/* ------------------------------------------------------- daemon mode */

struct cb_log {
	int calls;
	int status[8];
	uint32_t uid[8];
	size_t nres[8];
};

static void on_done(store_req *r, void *arg)
{
	struct cb_log *l = arg;
	if (l->calls < 8) {
		l->status[l->calls] = store_req_status(r);
		l->nres[l->calls] = store_req_count(r);
		const struct store_result *res = store_req_result(r, store_req_count(r) - 1);
		l->uid[l->calls] = res ? res->uid : 0;
	}
	l->calls++;
}

static store *open_loop(const char *dir, uv_loop_t *loop, const struct store_options *opt)
{
	store *s = NULL;
	char err[512];
	int rc = store_open(&s, dir, opt, loop, err, sizeof err);
	if (rc != STORE_OK)
		fprintf(stderr, "store_open: %s\n", err);
	CHECK_EQ(rc, STORE_OK);
	return s;
}

static void close_loop(store *s, uv_loop_t *loop)
{
	store_close(s);
	uv_run(loop, UV_RUN_DEFAULT);
	CHECK_EQ(uv_loop_close(loop), 0);
}

static void test_group_commit(void)
{
	char *dir = tmpdir();
	uv_loop_t loop;
	uv_loop_init(&loop);
	store *s = open_loop(dir, &loop, NULL);
	struct cb_log log;
	memset(&log, 0, sizeof log);

	store_req *r = store_req_new();
	store_req_user_add(r, "alice", "h");
	store_req_submit(s, r, on_done, &log);
	r = store_req_new();
	store_req_user_quota(r, "alice", 60, 0);
	store_req_submit(s, r, on_done, &log);
	store_msg *m = msg_of(MSG1, strlen(MSG1));
	r = store_req_new();
	store_req_deliver(r, "alice", NULL, m, 0, 0);
	store_req_submit(s, r, on_done, &log);
	r = store_req_new();
	store_req_deliver(r, "nobody", NULL, m, 0, 0);
	store_req_submit(s, r, on_done, &log);
	r = store_req_new();                    /* over quota: MSG1 twice > 60 */
	store_req_deliver(r, "alice", NULL, m, 0, 0);
	store_req_submit(s, r, on_done, &log);
	r = store_req_new();
	store_req_user_quota(r, "alice", 0, 0);
	store_req_deliver(r, "alice", "Sent", m, 0, 0);
	store_req_deliver(r, "alice", NULL, m, STORE_F_SEEN, 0);
	store_req_submit(s, r, on_done, &log);
	store_msg_unref(m);

	uv_run(&loop, UV_RUN_DEFAULT);  /* returns once every callback ran */
	CHECK_EQ(log.calls, 6);
	CHECK_EQ(log.status[0], STORE_OK);
	CHECK_EQ(log.status[1], STORE_OK);
	CHECK_EQ(log.status[2], STORE_OK);
	CHECK_EQ(log.uid[2], 1);
	CHECK_EQ(log.status[3], STORE_NOTFOUND);
	CHECK_EQ(log.status[4], STORE_OVERQUOTA);
	CHECK_EQ(log.status[5], STORE_OK);
	CHECK_EQ(log.nres[5], 3);
	CHECK_EQ(log.uid[5], 2);

	store_txn *t = store_read_begin(s);
	struct store_user u;
	CHECK_EQ(store_user_get(t, "alice", &u), STORE_OK);
	struct store_mailbox in;
	CHECK_EQ(store_mailbox_get(t, u.id, "INBOX", &in), STORE_OK);
	CHECK_EQ(in.messages, 2);
	CHECK_EQ(in.unseen, 1);
	CHECK_EQ(u.used_messages, 3);
	CHECK_EQ(u.quota_bytes, 0);
	store_read_end(t);

	/* Submitted but not yet run at close: store_close drains them. */
	memset(&log, 0, sizeof log);
	r = store_req_new();
	store_req_flags(r, in.id, 1, STORE_F_FLAGGED, 0);
	store_req_submit(s, r, on_done, &log);
	close_loop(s, &loop);
	CHECK_EQ(log.calls, 1);
	CHECK_EQ(log.status[0], STORE_OK);

	/* Reopen: everything persisted. */
	s = open_sync(dir, NULL);
	struct store_message msg;
	CHECK_EQ(msg_get(s, in.id, 1, &msg), STORE_OK);
	CHECK_EQ(msg.flags, STORE_F_FLAGGED);
	CHECK_EQ(body_state(s, msg.body_id, MSG1), 1);
	struct store_mailbox in2 = mbox(s, "alice", "INBOX");
	CHECK_EQ(in2.uidvalidity, in.uidvalidity);
	CHECK_EQ(in2.uidnext, 3);
	CHECK_EQ(mbox(s, "alice", "Sent").messages, 1);
	store_close(s);

	/* Read-only: readable, not writable. */
	struct store_options ro = { .readonly = true };
	s = open_sync(dir, &ro);
	CHECK_EQ(mbox(s, "alice", "INBOX").messages, 2);
	CHECK_EQ(add_user(s, "zed"), STORE_INVALID);
	store_close(s);
	rmtree(dir);
}

struct watch_log {
	int calls;
	uint32_t last;
	uv_loop_t *loop;
	bool stop_on_call;
};

static void on_watch(void *arg, uint32_t mailbox_id)
{
	struct watch_log *w = arg;
	w->calls++;
	w->last = mailbox_id;
	if (w->stop_on_call)
		uv_stop(w->loop);
}

static void on_give_up(uv_timer_t *h)
{
	uv_stop(h->loop);
}

static void test_watch(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	uint32_t inbox = mbox(s, "alice", "INBOX").id;
	uint32_t sent = mbox(s, "alice", "Sent").id;
	store_close(s);

	uv_loop_t loop;
	uv_loop_init(&loop);
	s = open_loop(dir, &loop, NULL);
	struct watch_log wi = { 0, 0, &loop, false }, ws = { 0, 0, &loop, false };
	store_watch *w1 = store_watch_add(s, inbox, on_watch, &wi);
	store_watch *w2 = store_watch_add(s, sent, on_watch, &ws);
	CHECK(w1 && w2);
	struct cb_log log;
	memset(&log, 0, sizeof log);
	store_msg *m = msg_of(MSG1, strlen(MSG1));
	store_req *r = store_req_new();
	store_req_deliver(r, "alice", NULL, m, 0, 0);
	store_req_submit(s, r, on_done, &log);
	/* The watch timer keeps no reference: the loop ends after the callback. */
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ(log.calls, 1);
	CHECK_EQ(wi.calls, 1);
	CHECK_EQ(wi.last, inbox);
	CHECK_EQ(ws.calls, 0);

	/* A batch whose every request fails still commits (the writer sets a
	 * key of its own first), so LMDB's txn id moves with it: the id the
	 * writer keeps is really its own, and the other process's commit below
	 * is newer than it. */
	r = store_req_new();
	store_req_deliver(r, "nobody", NULL, m, 0, 0);
	store_req_submit(s, r, on_done, &log);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ(log.calls, 2);
	CHECK_EQ(log.status[1], STORE_NOTFOUND);

	/* A commit by another process reaches the watcher through the timer. */
	pid_t pid = fork();
	if (pid == 0) {
		store *cs = NULL;
		char err[256];
		if (store_open(&cs, dir, NULL, NULL, err, sizeof err) != STORE_OK)
			_exit(3);
		store_req *cr = store_req_new();
		store_req_deliver(cr, "alice", "Sent", m, 0, 0);
		int st = store_req_run(cs, cr);
		store_close(cs);
		_exit(st == STORE_OK ? 0 : 4);
	}
	int wstatus = 0;
	waitpid(pid, &wstatus, 0);
	CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
	ws.stop_on_call = true;
	uv_timer_t give_up;
	uv_timer_init(&loop, &give_up);
	uv_timer_start(&give_up, on_give_up, 3000, 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(ws.calls >= 1);
	uv_timer_stop(&give_up);
	uv_close((uv_handle_t *)&give_up, NULL);

	store_watch_remove(w1);
	store_watch_remove(w2);
	int before = wi.calls;
	r = store_req_new();
	store_req_deliver(r, "alice", NULL, m, 0, 0);
	store_req_submit(s, r, on_done, &log);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ(wi.calls, before);
	CHECK_EQ(log.calls, 3);
	store_msg_unref(m);
	close_loop(s, &loop);
	rmtree(dir);
}

static bool file_is(const char *path, const char *content, size_t len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return false;
	char buf[256];
	size_t n = fread(buf, 1, sizeof buf, f);
	fclose(f);
	return n == len && memcmp(buf, content, len) == 0;
}

static void test_foreign(void)
{
	char *dir = tmpdir();
	char path[700], lock[700];
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	snprintf(lock, sizeof lock, "%s/lock.mdb", dir);
	const char junk[] = "This is my thesis, not a mail store. Do not eat it.\n";
	FILE *f = fopen(path, "wb");
	fwrite(junk, 1, sizeof junk - 1, f);
	fclose(f);
	store *s = (store *)1;
	char err[512] = "";
	CHECK_EQ(store_open(&s, dir, NULL, NULL, err, sizeof err), STORE_CORRUPT);
	CHECK(s == NULL);
	CHECK(strstr(err, dir) != NULL);
	CHECK(file_is(path, junk, sizeof junk - 1));
	CHECK(access(lock, F_OK) != 0);
	struct store_options ro = { .readonly = true };
	CHECK_EQ(store_open(&s, dir, &ro, NULL, err, sizeof err), STORE_CORRUPT);
	CHECK(file_is(path, junk, sizeof junk - 1));
	remove(path);

	/* A folder with someone else's files. */
	snprintf(path, sizeof path, "%s/notes.txt", dir);
	f = fopen(path, "wb");
	fwrite(junk, 1, sizeof junk - 1, f);
	fclose(f);
	CHECK_EQ(store_open(&s, dir, NULL, NULL, err, sizeof err), STORE_CORRUPT);
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	CHECK(access(path, F_OK) != 0);
	snprintf(path, sizeof path, "%s/notes.txt", dir);
	remove(path);

	/* An LMDB file of another program. */
	MDB_env *env;
	mdb_env_create(&env);
	CHECK_EQ(mdb_env_open(env, dir, 0, 0600), 0);
	MDB_txn *txn;
	mdb_txn_begin(env, NULL, 0, &txn);
	MDB_dbi dbi;
	mdb_dbi_open(txn, NULL, 0, &dbi);
	MDB_val k = { 3, (void *)(uintptr_t)"key" }, v = { 5, (void *)(uintptr_t)"value" };
	mdb_put(txn, dbi, &k, &v, 0);
	CHECK_EQ(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	struct stat before, after;
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	stat(path, &before);
	CHECK_EQ(store_open(&s, dir, NULL, NULL, err, sizeof err), STORE_CORRUPT);
	CHECK(strstr(err, "not a onebox store") != NULL);
	stat(path, &after);
	CHECK(before.st_mtime == after.st_mtime && before.st_size == after.st_size);
	rmtree(dir);

	/* Read-only open of nothing creates nothing. */
	dir = tmpdir();
	char sub[600];
	snprintf(sub, sizeof sub, "%s/store", dir);
	CHECK(store_open(&s, sub, &ro, NULL, err, sizeof err) != STORE_OK);
	CHECK(access(sub, F_OK) != 0);
	/* Read-only open of a store with no lock file creates none. */
	s = open_sync(sub, NULL);
	add_user(s, "alice");
	store_close(s);
	snprintf(lock, sizeof lock, "%s/lock.mdb", sub);
	remove(lock);
	s = open_sync(sub, &ro);
	CHECK(user_id(s, "alice") != 0);
	store_close(s);
	CHECK(access(lock, F_OK) != 0);
	rmtree(dir);
}

/* Distinct bodies of SIZE octets, so none is shared. */
static char *big_body(size_t size, int seed)
{
	char *p = malloc(size + 1);
	snprintf(p, size, "Subject: big %d\r\n\r\n", seed);
	size_t h = strlen(p);
	for (size_t i = h; i < size; i++)
		p[i] = (i % 78 == 76) ? '\r' : (i % 78 == 77) ? '\n' : (char)('a' + (i + (size_t)seed) % 26);
	p[size] = '\0';
	return p;
}

/* Expunge UID of MAILBOX_ID. */
static int expunge_one(store *s, uint32_t mailbox_id, uint32_t uid)
{
	store_req *r = store_req_new();
	store_req_expunge(r, mailbox_id, uid);
	return one_op(s, r);
}

/*
 * The same bytes again in another request soon after share the body the
 * first one wrote; bytes that only look the same (the same size, head and
 * tail) do not; a body deleted since is not found, and its number is not
 * given again.
 */
static void test_recent_bodies(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	CHECK_EQ(add_user(s, "bob"), STORE_OK);
	uint32_t ain = mbox(s, "alice", "INBOX").id, bin = mbox(s, "bob", "INBOX").id;
	const size_t size = 40000;
	char *a = big_body(size, 1);
	char *twin = big_body(size, 1);
	twin[size / 2] = twin[size / 2] == 'x' ? 'y' : 'x';
	struct store_message m1, m2, m3;

	CHECK_EQ(deliver(s, "alice", NULL, a, 0), STORE_OK);
	CHECK_EQ(deliver(s, "bob", NULL, a, 0), STORE_OK);
	CHECK_EQ(deliver(s, "bob", NULL, twin, 0), STORE_OK);
	CHECK_EQ(msg_get(s, ain, 1, &m1), STORE_OK);
	CHECK_EQ(msg_get(s, bin, 1, &m2), STORE_OK);
	CHECK_EQ(msg_get(s, bin, 2, &m3), STORE_OK);
	CHECK(memcmp(m1.body_id, m2.body_id, 32) == 0);
	CHECK_EQ(store_body_number(m3.body_id), 2);
	CHECK_EQ(body_state(s, m3.body_id, twin), 1);
	/* Shared: alice's expunge leaves it to bob. */
	CHECK_EQ(expunge_one(s, ain, 1), STORE_OK);
	CHECK_EQ(body_state(s, m2.body_id, a), 1);
	/* Bob's too: gone, and the same bytes again make a new body with
	 * a new number (not 1, not 2). */
	CHECK_EQ(expunge_one(s, bin, 1), STORE_OK);
	CHECK_EQ(body_state(s, m2.body_id, NULL), 0);
	CHECK_EQ(deliver(s, "alice", NULL, a, 0), STORE_OK);
	CHECK_EQ(msg_get(s, ain, 2, &m1), STORE_OK);
	CHECK_EQ(store_body_number(m1.body_id), 3);
	CHECK_EQ(body_state(s, m1.body_id, a), 1);
	/* The highest number deleted: still not given again. */
	CHECK_EQ(expunge_one(s, ain, 2), STORE_OK);
	CHECK_EQ(expunge_one(s, bin, 2), STORE_OK);
	CHECK_EQ(deliver(s, "alice", NULL, twin, 0), STORE_OK);
	CHECK_EQ(msg_get(s, ain, 3, &m1), STORE_OK);
	CHECK_EQ(store_body_number(m1.body_id), 4);
	CHECK_EQ(body_state(s, m1.body_id, twin), 1);
	store_close(s);
	s = open_sync(dir, NULL);
	CHECK_EQ(deliver(s, "bob", NULL, a, 0), STORE_OK);
	CHECK_EQ(msg_get(s, bin, 3, &m2), STORE_OK);
	CHECK_EQ(store_body_number(m2.body_id), 5);
	store_close(s);
	free(a);
	free(twin);
	rmtree(dir);
}

static void test_map_growth(void)
{
	char *dir = tmpdir();
	struct store_options opt = { .map_size = 64 * 1024 };
	store *s = open_sync(dir, &opt);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	const size_t size = 200 * 1024;
	for (int i = 0; i < 15; i++) {
		char *b = big_body(size, i);
		CHECK_EQ(deliver(s, "alice", NULL, b, 0), STORE_OK);
		free(b);
	}
	store_close(s);

	/* Daemon mode: one batch of several large messages. */
	uv_loop_t loop;
	uv_loop_init(&loop);
	s = open_loop(dir, &loop, &opt);
	struct cb_log log;
	memset(&log, 0, sizeof log);
	for (int i = 15; i < 20; i++) {
		char *b = big_body(size, i);
		store_msg *m = msg_of(b, size);
		store_req *r = store_req_new();
		store_req_deliver(r, "alice", NULL, m, 0, 0);
		store_msg_unref(m);
		store_req_submit(s, r, on_done, &log);
		free(b);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ(log.calls, 5);
	for (int i = 0; i < 5; i++)
		CHECK_EQ(log.status[i], STORE_OK);
	close_loop(s, &loop);

	s = open_sync(dir, &opt);
	struct store_mailbox in = mbox(s, "alice", "INBOX");
	CHECK_EQ(in.messages, 20);
	for (uint32_t uid = 1; uid <= 20; uid++) {
		struct store_message m;
		CHECK_EQ(msg_get(s, in.id, uid, &m), STORE_OK);
		char *b = big_body(size, (int)uid - 1);
		CHECK_EQ(body_state(s, m.body_id, b), 1);
		free(b);
	}
	store_close(s);

	/* With a ceiling, a full map is a temporary failure (the kind that
	 * says "no space") and stores nothing. */
	struct store_options capped = { .map_size = 64 * 1024, .max_map_size = 8 * 1024 * 1024 };
	s = open_sync(dir, &capped);
	char *b = big_body(6 * 1024 * 1024, 99);
	CHECK_EQ(deliver(s, "alice", NULL, b, 0), STORE_NOSPACE);
	free(b);
	CHECK_EQ(mbox(s, "alice", "INBOX").messages, 20);
	store_close(s);
	rmtree(dir);
}

/* A new store folder with user alice; *INBOX: her INBOX's id. */
static char *alice_dir(uint32_t *inbox)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	*inbox = mbox(s, "alice", "INBOX").id;
	store_close(s);
	return dir;
}

/* Submit a delivery of BODY (LEN octets) to alice's INBOX. */
static void submit_body(store *s, const char *body, size_t len, struct cb_log *log)
{
	store_msg *m = msg_of(body, len);
	store_req *r = store_req_new();
	store_req_deliver(r, "alice", NULL, m, 0, 0);
	store_msg_unref(m);
	store_req_submit(s, r, on_done, log);
}

/*
 * Large messages are sealed on the prepare thread, small ones on the
 * loop; requests are still applied in the order they were submitted: the
 * UIDs follow it, and a flags change on UID 1 submitted right behind the
 * large delivery that makes UID 1 finds it.  Requests still with the
 * prepare thread at close are committed, not dropped.
 */
static void test_prepare_order(void)
{
	uint32_t inbox;
	char *dir = alice_dir(&inbox);
	store *s;

	const size_t sizes[] = { 1536 * 1024, 100, 1100 * 1024, 200, 64 * 1024 };
	const size_t n = sizeof sizes / sizeof sizes[0];
	char *bodies[5];
	uv_loop_t loop;
	uv_loop_init(&loop);
	s = open_loop(dir, &loop, NULL);
	struct cb_log log;
	memset(&log, 0, sizeof log);
	for (size_t i = 0; i < n; i++) {
		bodies[i] = big_body(sizes[i], (int)i);
		submit_body(s, bodies[i], sizes[i], &log);
		if (i == 0) {
			store_req *r = store_req_new();
			store_req_flags(r, inbox, 1, STORE_F_SEEN, 0);
			store_req_submit(s, r, on_done, &log);
		}
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ(log.calls, (int)n + 1);
	for (int i = 0; i < log.calls; i++)
		CHECK_EQ(log.status[i], STORE_OK);
	CHECK_EQ(log.uid[0], 1);
	CHECK_EQ(log.uid[2], 2);
	CHECK_EQ(log.uid[3], 3);
	CHECK_EQ(log.uid[4], 4);
	CHECK_EQ(log.uid[5], 5);

	/* Large ones, then close at once: the close drains them. */
	memset(&log, 0, sizeof log);
	char *late = big_body(1200 * 1024, 7);
	for (int i = 0; i < 3; i++)
		submit_body(s, late, strlen(late), &log);
	close_loop(s, &loop);
	CHECK_EQ(log.calls, 3);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(log.status[i], STORE_OK);

	s = open_sync(dir, NULL);
	CHECK_EQ(mbox(s, "alice", "INBOX").messages, 8);
	for (uint32_t uid = 1; uid <= 8; uid++) {
		struct store_message m;
		CHECK_EQ(msg_get(s, inbox, uid, &m), STORE_OK);
		CHECK_EQ(m.flags & STORE_F_SEEN, uid == 1 ? STORE_F_SEEN : 0u);
		/* Sealed on either thread, each message has its bytes; the
		 * three late ones (the same bytes, one after another) share
		 * one body, the others have one each. */
		const char *want = uid <= n ? bodies[uid - 1] : late;
		CHECK_EQ(body_state(s, m.body_id, want), 1);
		CHECK_EQ(store_body_number(m.body_id), uid <= n ? uid : n + 1);
	}
	store_close(s);
	for (size_t i = 0; i < n; i++)
		free(bodies[i]);
	free(late);
	rmtree(dir);
}

/*
 * The runway: past the last page LMDB uses, data.mdb is allocated (and
 * read once, so that it is in the page cache) by the store's own thread.
 * The file is longer than the store, and the store reads and writes as
 * before, also after it is opened again.
 */
static void test_runway(void)
{
	uint32_t inbox;
	char *dir = alice_dir(&inbox);
	store *s;

	/* Where fallocate works (ext4, xfs, tmpfs...), the runway must be on. */
	char probe[4096];
	snprintf(probe, sizeof probe, "%s/probe", dir);
	int fd = open(probe, O_RDWR | O_CREAT, 0600);
	CHECK(fd >= 0);
	bool can = fallocate(fd, 0, 0, 4096) == 0;
	close(fd);
	unlink(probe);

	uv_loop_t loop;
	uv_loop_init(&loop);
	s = open_loop(dir, &loop, NULL);
	struct cb_log log;
	memset(&log, 0, sizeof log);
	const size_t size = 512 * 1024;
	for (int i = 0; i < 8; i++) {
		char *b = big_body(size, i);
		submit_body(s, b, size, &log);
		free(b);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ(log.calls, 8);
	uint64_t used = 0, ready = 0;
	bool on = store_runway_get(s, &used, &ready);
	/* The thread gets there on its own time: wait for it, 10 s at most. */
	for (int i = 0; on && i < 1000 && ready < used + used / 4; i++) {
		usleep(10000);
		on = store_runway_get(s, &used, &ready);
	}
	char data[4096];
	snprintf(data, sizeof data, "%s/data.mdb", dir);
	struct stat st;
	CHECK_EQ(stat(data, &st), 0);
	CHECK(on || !can);
	if (on) {
		CHECK(used >= 8 * size);
		CHECK(ready >= used + used / 4 && ready >= used + (1u << 20));
		CHECK((uint64_t)st.st_size >= ready);
		CHECK((uint64_t)st.st_blocks * 512 >= ready);
	} else {
		fprintf(stderr, "test_runway: no fallocate where %s is: runway not checked\n", dir);
	}
	close_loop(s, &loop);

	s = open_sync(dir, NULL);
	CHECK_EQ(mbox(s, "alice", "INBOX").messages, 8);
	char *b = big_body(size, 8);
	CHECK_EQ(deliver(s, "alice", NULL, b, 0), STORE_OK);
	for (uint32_t uid = 1; uid <= 9; uid++) {
		struct store_message m;
		CHECK_EQ(msg_get(s, inbox, uid, &m), STORE_OK);
		char *want = big_body(size, (int)uid - 1);
		CHECK_EQ(body_state(s, m.body_id, want), 1);
		free(want);
	}
	free(b);
	store_close(s);
	rmtree(dir);
}

/* Another process grows the map while we have the store open: our next
 * txns meet MDB_MAP_RESIZED and adopt the new size. */
static void test_map_resized_elsewhere(void)
{
	char *dir = tmpdir();
	struct store_options opt = { .map_size = 64 * 1024 };
	store *s = open_sync(dir, &opt);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	const size_t size = 3 * 1024 * 1024;
	pid_t pid = fork();
	if (pid == 0) {
		store *cs = NULL;
		char err[256];
		if (store_open(&cs, dir, &opt, NULL, err, sizeof err) != STORE_OK)
			_exit(3);
		char *b = big_body(size, 7);
		int st = deliver(cs, "alice", NULL, b, 0);
		store_close(cs);
		_exit(st == STORE_OK ? 0 : 4);
	}
	int wstatus = 0;
	waitpid(pid, &wstatus, 0);
	CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
	struct store_mailbox in = mbox(s, "alice", "INBOX");
	CHECK_EQ(in.messages, 1);
	struct store_message m;
	CHECK_EQ(msg_get(s, in.id, 1, &m), STORE_OK);
	char *b = big_body(size, 7);
	CHECK_EQ(body_state(s, m.body_id, b), 1);
	free(b);
	b = big_body(size, 8);
	CHECK_EQ(deliver(s, "alice", NULL, b, 0), STORE_OK);
	/* The other process's body took number 1: ours is the next. */
	CHECK_EQ(store_body_number(m.body_id), 1);
	CHECK_EQ(msg_get(s, in.id, 2, &m), STORE_OK);
	CHECK_EQ(store_body_number(m.body_id), 2);
	CHECK_EQ(body_state(s, m.body_id, b), 1);
	free(b);
	CHECK_EQ(mbox(s, "alice", "INBOX").messages, 2);
	store_close(s);
	rmtree(dir);
}

static void test_retention(void)
{
	char *dir = tmpdir();
	struct store_options opt = { .expunge_retention = 1 };
	store *s = open_sync(dir, &opt);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	CHECK_EQ(deliver(s, "alice", NULL, MSG1, 0), STORE_OK);
	struct store_mailbox in = mbox(s, "alice", "INBOX");
	struct store_message m;
	CHECK_EQ(msg_get(s, in.id, 1, &m), STORE_OK);
	store_req *r = store_req_new();
	store_req_expunge(r, in.id, 1);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(msg_get(s, in.id, 1, &m), STORE_NOTFOUND);
	CHECK_EQ(body_state(s, m.body_id, MSG1), 1);    /* retained */
	sleep(2);
	CHECK_EQ(add_user(s, "bob"), STORE_OK);         /* any commit purges */
	CHECK_EQ(body_state(s, m.body_id, NULL), 0);
	store_close(s);
	rmtree(dir);
}

/* ------------------------------------------------ keywords, append, MIME */

/* The keyword table of MB as "a,b,c" (NULL entries as "-"). */
static void kw_table(store *s, uint32_t mb, char *out, size_t cap, size_t *np)
{
	const char *names[64];
	size_t n = 99;
	out[0] = '\0';
	store_txn *t = store_read_begin(s);
	CHECK_EQ(store_mailbox_keywords(t, mb, names, &n), STORE_OK);
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(out);
		snprintf(out + len, cap - len, "%s%s", i ? "," : "", names[i] ? names[i] : "-");
	}
	for (size_t i = n; i < 64; i++)
		CHECK(names[i] == NULL);
	store_read_end(t);
	if (np)
		*np = n;
}

/* Run R on S (opened with LOOP) and keep its results: store_req_run frees
 * a request before it can be read. */
struct results {
	struct store_result res[8];
	size_t n;
	int status;
};

static void on_results(store_req *r, void *arg)
{
	struct results *out = arg;
	out->status = store_req_status(r);
	out->n = store_req_count(r);
	for (size_t i = 0; i < out->n && i < 8; i++)
		out->res[i] = *store_req_result(r, i);
}

static int run_results(store *s, uv_loop_t *loop, store_req *r, struct results *out)
{
	memset(out, 0, sizeof *out);
	out->status = -1;
	store_req_submit(s, r, on_results, out);
	uv_run(loop, UV_RUN_DEFAULT);
	return out->status;
}

static int set_flags(store *s, uint32_t mb, uint32_t uid, enum store_flag_mode mode,
                     uint32_t flags, const char *const *kw, size_t nkw)
{
	store_req *r = store_req_new();
	store_req_set_flags(r, mb, uid, mode, flags, kw, nkw);
	return store_req_run(s, r);
}

static void test_keywords(void)
{
	char *dir = tmpdir();
	uv_loop_t loop;
	uv_loop_init(&loop);
	store *s = open_loop(dir, &loop, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	for (int i = 0; i < 2; i++)
		CHECK_EQ(deliver(s, "alice", NULL, i ? "two\r\n" : "one\r\n", 0), STORE_OK);
	struct store_mailbox in = mbox(s, "alice", "INBOX");
	char tab[4096];
	size_t n;
	kw_table(s, in.id, tab, sizeof tab, &n);
	CHECK_EQ(n, 0);
	uint64_t hms = in.highestmodseq;

	/* ADD: new names enter the table in order, original case kept. */
	const char *k1[] = { "$Forwarded", "Work" };
	CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_ADD, STORE_F_SEEN, k1, 2), STORE_OK);
	kw_table(s, in.id, tab, sizeof tab, &n);
	CHECK(strcmp(tab, "$Forwarded,Work") == 0);
	struct store_message m;
	CHECK_EQ(msg_get(s, in.id, 1, &m), STORE_OK);
	CHECK_EQ(m.flags, STORE_F_SEEN);
	CHECK_EQ(m.keywords, 3);
	CHECK_EQ(m.modseq, hms + 1);
	in = mbox(s, "alice", "INBOX");
	CHECK_EQ(in.highestmodseq, hms + 1);
	CHECK_EQ(in.unseen, 1);

	/* Case-insensitive match: no new entry, nothing changes, no modseq. */
	const char *k2[] = { "WORK", "$forwarded" };
	CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_ADD, STORE_F_SEEN, k2, 2), STORE_OK);
	kw_table(s, in.id, tab, sizeof tab, &n);
	CHECK(strcmp(tab, "$Forwarded,Work") == 0);
	CHECK_EQ(mbox(s, "alice", "INBOX").highestmodseq, hms + 1);
	struct changes ch = changes_since(s, in.id, hms);
	CHECK_EQ(ch.n, 1);
	CHECK_EQ(ch.uid[0], 1);

	/* REMOVE of a name never used does not grow the table. */
	const char *k3[] = { "work", "Unknown" };
	CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_REMOVE, 0, k3, 2), STORE_OK);
	kw_table(s, in.id, tab, sizeof tab, &n);
	CHECK(strcmp(tab, "$Forwarded,Work") == 0);
	CHECK_EQ(msg_get(s, in.id, 1, &m), STORE_OK);
	CHECK_EQ(m.keywords, 1);
	CHECK_EQ(m.flags, STORE_F_SEEN);
	CHECK_EQ(m.modseq, hms + 2);
	ch = changes_since(s, in.id, hms);
	CHECK_EQ(ch.n, 1);      /* one entry per message, at its latest modseq */
	CHECK_EQ(ch.modseq[0], hms + 2);

	/* REPLACE: flags and keywords become exactly those given. */
	const char *k4[] = { "Home" };
	CHECK_EQ(set_flags(s, in.id, 2, STORE_FLAGS_REPLACE, STORE_F_DELETED | STORE_F_SEEN,
	                   k4, 1), STORE_OK);
	kw_table(s, in.id, tab, sizeof tab, &n);
	CHECK(strcmp(tab, "$Forwarded,Work,Home") == 0);
	CHECK_EQ(msg_get(s, in.id, 2, &m), STORE_OK);
	CHECK_EQ(m.flags, STORE_F_DELETED | STORE_F_SEEN);
	CHECK_EQ(m.keywords, 4);
	in = mbox(s, "alice", "INBOX");
	CHECK_EQ(in.unseen, 0);
	CHECK_EQ(in.deleted, 1);
	CHECK_EQ(in.highestmodseq, hms + 3);
	CHECK_EQ(set_flags(s, in.id, 2, STORE_FLAGS_REPLACE, STORE_F_FLAGGED, NULL, 0), STORE_OK);
	CHECK_EQ(msg_get(s, in.id, 2, &m), STORE_OK);
	CHECK_EQ(m.flags, STORE_F_FLAGGED);
	CHECK_EQ(m.keywords, 0);
	in = mbox(s, "alice", "INBOX");
	CHECK_EQ(in.unseen, 1);
	CHECK_EQ(in.deleted, 0);
	CHECK_EQ(in.highestmodseq, hms + 4);
	/* REMOVE of system flags only; a second identical one changes nothing. */
	CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_REMOVE, STORE_F_SEEN, NULL, 0), STORE_OK);
	CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_REMOVE, STORE_F_SEEN, NULL, 0), STORE_OK);
	in = mbox(s, "alice", "INBOX");
	CHECK_EQ(in.unseen, 2);
	CHECK_EQ(in.highestmodseq, hms + 5);

	/* Results: the UID when applied (changed or not), 0 for a gone UID. */
	store_req *r = store_req_new();
	store_req_set_flags(r, in.id, 1, STORE_FLAGS_ADD, STORE_F_ANSWERED, NULL, 0);
	store_req_set_flags(r, in.id, 1, STORE_FLAGS_ADD, STORE_F_ANSWERED, NULL, 0);
	store_req_set_flags(r, in.id, 77, STORE_FLAGS_ADD, STORE_F_ANSWERED, NULL, 0);
	struct results res;
	CHECK_EQ(run_results(s, &loop, r, &res), STORE_OK);
	CHECK_EQ(res.n, 3);
	CHECK_EQ(res.res[0].status, STORE_OK);
	CHECK_EQ(res.res[0].uid, 1);
	CHECK_EQ(res.res[0].mailbox_id, in.id);
	CHECK_EQ(res.res[0].uidvalidity, in.uidvalidity);
	CHECK_EQ(res.res[1].uid, 1);
	CHECK_EQ(res.res[2].status, STORE_OK);
	CHECK_EQ(res.res[2].uid, 0);
	CHECK_EQ(mbox(s, "alice", "INBOX").highestmodseq, hms + 6);

	/* set_flags_if (CONDSTORE): a message changed after UNCHANGEDSINCE is
	 * left alone as STORE_MODIFIED without failing the request; 0 always
	 * fails; a gone UID is skipped; a name of a failed op is not added. */
	{
		struct store_message c1, c2;
		CHECK_EQ(msg_get(s, in.id, 1, &c1), STORE_OK);
		uint64_t h = mbox(s, "alice", "INBOX").highestmodseq;
		const char *nk[] = { "$never" };
		r = store_req_new();
		store_req_set_flags_if(r, in.id, 1, STORE_FLAGS_ADD, STORE_F_FLAGGED, NULL, 0,
		                       c1.modseq - 1);
		store_req_set_flags_if(r, in.id, 2, STORE_FLAGS_ADD, STORE_F_DRAFT, NULL, 0, h);
		store_req_set_flags_if(r, in.id, 77, STORE_FLAGS_ADD, STORE_F_FLAGGED, NULL, 0, h);
		store_req_set_flags_if(r, in.id, 2, STORE_FLAGS_ADD, 0, nk, 1, 0);
		CHECK_EQ(run_results(s, &loop, r, &res), STORE_OK);
		CHECK_EQ(res.n, 4);
		CHECK_EQ(res.res[0].status, STORE_MODIFIED);
		CHECK_EQ(res.res[0].uid, 1);
		CHECK_EQ(res.res[0].modseq, c1.modseq);
		CHECK_EQ(res.res[1].status, STORE_OK);
		CHECK_EQ(res.res[1].uid, 2);
		CHECK_EQ(res.res[1].modseq, h + 1);
		CHECK_EQ(res.res[2].status, STORE_OK);
		CHECK_EQ(res.res[2].uid, 0);
		CHECK_EQ(res.res[3].status, STORE_MODIFIED);
		CHECK_EQ(res.res[3].modseq, h + 1);
		CHECK_EQ(msg_get(s, in.id, 1, &c1), STORE_OK);
		CHECK(!(c1.flags & STORE_F_FLAGGED));
		CHECK_EQ(msg_get(s, in.id, 2, &c2), STORE_OK);
		CHECK(c2.flags & STORE_F_DRAFT);
		CHECK_EQ(c2.modseq, h + 1);
		CHECK_EQ(mbox(s, "alice", "INBOX").highestmodseq, h + 1);
		kw_table(s, in.id, tab, sizeof tab, &n);
		CHECK(strstr(tab, "$never") == NULL);
		CHECK(strcmp(store_strerror(STORE_MODIFIED), "unknown error") != 0);
		hms++; /* the one change of this block */
	}

	/* Junk names are refused and the table is untouched. */
	const char *bad[] = { "\\Seen", "two words", "a(b", "x]", "q\"", "w*", "p%", "c{",
	                      "", "\001ctl", "caf\xc3\xa9" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_ADD, 0, &bad[i], 1), STORE_INVALID);
		CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_REMOVE, 0, &bad[i], 1), STORE_INVALID);
	}
	char longkw[300];
	memset(longkw, 'k', sizeof longkw - 1);
	longkw[sizeof longkw - 1] = '\0';
	const char *lk[] = { longkw };
	CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_ADD, 0, lk, 1), STORE_INVALID);
	const char *nullkw[] = { NULL };
	CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_ADD, 0, nullkw, 1), STORE_INVALID);
	CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_ADD, 0, NULL, 1), STORE_INVALID);
	CHECK_EQ(set_flags(s, in.id, 1, (enum store_flag_mode)7, 0, NULL, 0), STORE_INVALID);
	kw_table(s, in.id, tab, sizeof tab, &n);
	CHECK(strcmp(tab, "$Forwarded,Work,Home") == 0);
	CHECK_EQ(mbox(s, "alice", "INBOX").highestmodseq, hms + 6);

	/* The table holds 64 names; the 65th distinct one fails its request,
	 * which stores nothing (not the flag, not the names before it). */
	char names[64][16];
	const char *nv[64];
	for (int i = 0; i < 64; i++) {
		snprintf(names[i], sizeof names[i], "kw%d", i);
		nv[i] = names[i];
	}
	CHECK_EQ(set_flags(s, in.id, 2, STORE_FLAGS_ADD, 0, nv, 61), STORE_OK);
	kw_table(s, in.id, tab, sizeof tab, &n);
	CHECK_EQ(n, 64);
	CHECK_EQ(msg_get(s, in.id, 2, &m), STORE_OK);
	CHECK(m.keywords == ~(uint64_t)7);
	uint64_t before = mbox(s, "alice", "INBOX").highestmodseq;
	CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_ADD, STORE_F_FLAGGED, nv + 61, 3),
	         STORE_INVALID);
	r = store_req_new();
	store_req_set_flags(r, in.id, 1, STORE_FLAGS_ADD, STORE_F_FLAGGED, NULL, 0);
	store_req_set_flags(r, in.id, 1, STORE_FLAGS_ADD, 0, nv + 62, 1);
	CHECK_EQ(run_results(s, &loop, r, &res), STORE_INVALID);
	CHECK_EQ(res.res[0].status, STORE_INVALID);
	CHECK_EQ(res.res[1].status, STORE_INVALID);
	kw_table(s, in.id, tab, sizeof tab, &n);
	CHECK_EQ(n, 64);
	CHECK_EQ(msg_get(s, in.id, 1, &m), STORE_OK);
	CHECK_EQ(m.flags & STORE_F_FLAGGED, 0);
	CHECK_EQ(mbox(s, "alice", "INBOX").highestmodseq, before);
	/* Known names still work on a full table, in any case. */
	const char *k5[] = { "KW60", "home" };
	CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_REPLACE, 0, k5, 2), STORE_OK);
	CHECK_EQ(msg_get(s, in.id, 1, &m), STORE_OK);
	CHECK(m.keywords == ((uint64_t)1 << 63 | 4));

	/* Tables are per mailbox; a mailbox that is gone has none. */
	struct store_mailbox sent = mbox(s, "alice", "Sent");
	kw_table(s, sent.id, tab, sizeof tab, &n);
	CHECK_EQ(n, 0);
	const char *names0[64];
	store_txn *t = store_read_begin(s);
	CHECK_EQ(store_mailbox_keywords(t, 9999, names0, &n), STORE_NOTFOUND);
	store_read_end(t);
	close_loop(s, &loop);
	rmtree(dir);
}

static const char MIME1[] =
	"From: a@example.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
	"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
	"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
	"--b\r\nContent-Type: application/pdf\r\n\r\nPDF\r\n--b--\r\n";

/* Does body ID have a MIME blob, and does it load against the body into a
 * two-part multipart/mixed whose envelope has SUBJECT?  1 yes, 0 no blob. */
static int mime_state(store *s, const uint8_t id[32], const char *subject)
{
	store_txn *t = store_read_begin(s);
	const void *blob;
	size_t len;
	int st = store_body_mime(t, id, &blob, &len);
	int r = st == STORE_NOTFOUND ? 0 : st != STORE_OK ? -1 : 1;
	if (r == 1) {
		const char *body;
		size_t blen;
		CHECK_EQ(store_body_get(t, id, &body, &blen), STORE_OK);
		mime_tree *tree = mime_load(blob, len, body, blen);
		CHECK(tree != NULL);
		if (tree) {
			const struct mime_part *root = mime_root(tree);
			const struct mime_envelope *env = mime_envelope(tree);
			CHECK(root->subtype.p && root->subtype.len == 5 &&
			      memcmp(root->subtype.p, "mixed", 5) == 0);
			CHECK_EQ(root->nchildren, 2);
			CHECK(env->subject.p && env->subject.len == strlen(subject) &&
			      memcmp(env->subject.p, subject, env->subject.len) == 0);
			mime_free(tree);
		}
	}
	store_read_end(t);
	return r;
}

/* Open the store in DIR (closed) with LMDB itself, as another program or
 * an older onebox would, and begin a txn on it: read-only unless WRITE. */
static MDB_txn *raw_begin(const char *dir, bool write)
{
	MDB_env *env;
	MDB_txn *txn = NULL;
	CHECK_EQ(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 16);
	CHECK_EQ(mdb_env_open(env, dir, write ? 0 : MDB_RDONLY, 0600), 0);
	CHECK_EQ(mdb_txn_begin(env, NULL, write ? 0 : MDB_RDONLY, &txn), 0);
	return txn;
}

/* Commit (or with COMMIT false abort) a raw_begin txn and close its env. */
static void raw_end(MDB_txn *txn, bool commit)
{
	MDB_env *env = mdb_txn_env(txn);
	if (commit)
		CHECK_EQ(mdb_txn_commit(txn), 0);
	else
		mdb_txn_abort(txn);
	mdb_env_close(env);
}

/* How stores before 2026-11-22 kept a body's info record and blob. */
enum old_layout {
	INFO_NO_BLOB,           /* body_info, no blob (before blobs existed) */
	INFO_BLOB_IN_MIME_DB,   /* body_info, the blob in body_mime */
	INFO_WITH_BLOB,         /* body_info, the blob after the 16 octets */
};

/*
 * Move every info record of the store in DIR (closed) from `bodies`
 * (the id and one octet) to body_info as LAYOUT says.  Returns how many
 * were moved.
 */
static size_t info_to_old_layout(const char *dir, enum old_layout layout)
{
	MDB_dbi bodies, info, mime;
	MDB_cursor *c;
	MDB_val k, v;
	size_t n = 0;
	MDB_txn *txn = raw_begin(dir, true);
	CHECK_EQ(mdb_dbi_open(txn, "bodies", 0, &bodies), 0);
	CHECK_EQ(mdb_dbi_open(txn, "body_info", 0, &info), 0);
	CHECK_EQ(mdb_dbi_open(txn, "body_mime", 0, &mime), 0);
	CHECK_EQ(mdb_cursor_open(txn, bodies, &c), 0);
	int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	while (rc == 0) {
		if (k.mv_size != 33) {
			rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
			continue;
		}
		CHECK(v.mv_size >= 16);
		/* Copies: the puts below may move what K and V point at. */
		uint8_t key[33];
		memcpy(key, k.mv_data, 33);
		uint8_t *val = malloc(v.mv_size);
		CHECK(val != NULL);
		memcpy(val, v.mv_data, v.mv_size);
		MDB_val id = { 32, key }, full = { 33, key };
		MDB_val rec = { layout == INFO_WITH_BLOB ? v.mv_size : 16, val };
		MDB_val blob = { v.mv_size - 16, val + 16 };
		CHECK_EQ(mdb_put(txn, info, &id, &rec, 0), 0);
		if (layout == INFO_BLOB_IN_MIME_DB && blob.mv_size)
			CHECK_EQ(mdb_put(txn, mime, &id, &blob, 0), 0);
		CHECK_EQ(mdb_del(txn, bodies, &full, NULL), 0);
		free(val);
		n++;
		k = full;
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	}
	mdb_cursor_close(c);
	raw_end(txn, true);
	return n;
}

/* Count, in the store in DIR (closed), the bodies (32-octet keys of
 * `bodies`) with BODIES, and the MIME blobs wherever they are: after the
 * 16 octets of an info record in `bodies` or body_info, or in body_mime. */
static size_t blob_count(const char *dir, size_t *bodies)
{
	MDB_dbi dbi;
	MDB_cursor *c;
	MDB_val k, v;
	MDB_stat st = { 0 };
	size_t n = 0, nb = 0;
	MDB_txn *txn = raw_begin(dir, false);
	const char *dbs[] = { "bodies", "body_info" };
	for (size_t i = 0; i < 2; i++) {
		CHECK_EQ(mdb_dbi_open(txn, dbs[i], 0, &dbi), 0);
		CHECK_EQ(mdb_cursor_open(txn, dbi, &c), 0);
		for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
		     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
			if (i == 0 && k.mv_size == 32)
				nb++;
			else
				n += v.mv_size > 16;
		}
		mdb_cursor_close(c);
	}
	if (mdb_dbi_open(txn, "body_mime", 0, &dbi) == 0)
		mdb_stat(txn, dbi, &st);
	raw_end(txn, false);
	if (bodies)
		*bodies = nb;
	return n + st.ms_entries;
}

/* Entries in the named database DB of the store in DIR (closed). */
static size_t db_entries(const char *dir, const char *db)
{
	MDB_dbi dbi;
	MDB_stat st = { 0 };
	MDB_txn *txn = raw_begin(dir, false);
	if (mdb_dbi_open(txn, db, 0, &dbi) == 0)
		mdb_stat(txn, dbi, &st);
	raw_end(txn, false);
	return st.ms_entries;
}

static void test_append(void)
{
	char *dir = tmpdir();
	uv_loop_t loop;
	uv_loop_init(&loop);
	store *s = open_loop(dir, &loop, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	struct store_mailbox drafts = mbox(s, "alice", "Drafts");
	uint64_t hms = drafts.highestmodseq;

	store_msg *msg = msg_of(MIME1, strlen(MIME1));
	const char *kw[] = { "$Draft2", "Urgent", "urgent" };
	store_req *r = store_req_new();
	store_req_append(r, drafts.id, msg, STORE_F_DRAFT | STORE_F_SEEN | 0x100, kw, 3,
	                 1000000000);
	store_req_append(r, drafts.id, msg, 0, NULL, 0, 0);
	store_msg_unref(msg);
	struct results res;
	CHECK_EQ(run_results(s, &loop, r, &res), STORE_OK);
	CHECK_EQ(res.res[0].uid, 1);
	CHECK_EQ(res.res[0].mailbox_id, drafts.id);
	CHECK_EQ(res.res[0].uidvalidity, drafts.uidvalidity);
	CHECK_EQ(res.res[1].uid, 2);

	struct store_message m;
	CHECK_EQ(msg_get(s, drafts.id, 1, &m), STORE_OK);
	CHECK_EQ(m.flags, STORE_F_DRAFT | STORE_F_SEEN);
	CHECK_EQ(m.keywords, 3);
	CHECK_EQ(m.internal_date, 1000000000);
	CHECK_EQ(m.size, strlen(MIME1));
	CHECK_EQ(m.modseq, hms + 1);
	char tab[256];
	size_t n;
	kw_table(s, drafts.id, tab, sizeof tab, &n);
	CHECK(strcmp(tab, "$Draft2,Urgent") == 0);
	struct store_message m2;
	CHECK_EQ(msg_get(s, drafts.id, 2, &m2), STORE_OK);
	CHECK_EQ(m2.flags, 0);
	CHECK_EQ(m2.keywords, 0);
	CHECK(m2.internal_date > 1000000000);   /* 0: now */
	drafts = mbox(s, "alice", "Drafts");
	CHECK_EQ(drafts.messages, 2);
	CHECK_EQ(drafts.unseen, 1);
	CHECK_EQ(drafts.bytes, 2 * strlen(MIME1));
	CHECK_EQ(drafts.uidnext, 3);
	CHECK_EQ(drafts.highestmodseq, hms + 2);
	store_txn *t = store_read_begin(s);
	struct store_user u;
	CHECK_EQ(store_user_get(t, "alice", &u), STORE_OK);
	CHECK_EQ(u.used_messages, 2);
	CHECK_EQ(u.used_bytes, 2 * strlen(MIME1));
	store_read_end(t);

	/* The MIME blob: stored at ingest, one per body however shared. */
	CHECK(memcmp(m.body_id, m2.body_id, 32) == 0);
	CHECK_EQ(mime_state(s, m.body_id, "parts"), 1);
	CHECK_EQ(deliver(s, "alice", NULL, MIME1, 0), STORE_OK);
	CHECK_EQ(deliver(s, "alice", NULL, MSG1, 0), STORE_OK);
	struct store_mailbox in = mbox(s, "alice", "INBOX");
	struct store_message d1, d2;
	CHECK_EQ(msg_get(s, in.id, 1, &d1), STORE_OK);
	CHECK_EQ(msg_get(s, in.id, 2, &d2), STORE_OK);
	CHECK(memcmp(d1.body_id, m.body_id, 32) == 0);
	t = store_read_begin(s);
	const void *blob;
	size_t blen;
	CHECK_EQ(store_body_mime(t, d2.body_id, &blob, &blen), STORE_OK);
	const char *body;
	size_t bodylen;
	CHECK_EQ(store_body_get(t, d2.body_id, &body, &bodylen), STORE_OK);
	mime_tree *tree = mime_load(blob, blen, body, bodylen);
	CHECK(tree != NULL);
	if (tree) {
		CHECK_EQ(mime_root(tree)->nchildren, 0);
		CHECK_EQ(mime_root(tree)->body_off, strlen("From: a@example.com\r\nSubject: one\r\n\r\n"));
		mime_free(tree);
	}
	store_read_end(t);
	/* Three messages of one body and one of another: two blobs. */
	close_loop(s, &loop);
	size_t nbodies = 0;
	CHECK_EQ(blob_count(dir, &nbodies), 2);
	CHECK_EQ(nbodies, 2);
	CHECK_EQ(db_entries(dir, "body_mime"), 0);      /* kept in the info records */
	CHECK_EQ(db_entries(dir, "body_info"), 0);
	uv_loop_init(&loop);
	s = open_loop(dir, &loop, NULL);

	/* Failures: a gone mailbox, bad keywords, quota; none stores anything. */
	msg = msg_of(MSG1, strlen(MSG1));
	r = store_req_new();
	store_req_append(r, 9999, msg, 0, NULL, 0, 0);
	CHECK_EQ(store_req_run(s, r), STORE_NOTFOUND);
	const char *bad[] = { "ok", "not ok" };
	r = store_req_new();
	store_req_append(r, in.id, msg, 0, bad, 2, 0);
	CHECK_EQ(store_req_run(s, r), STORE_INVALID);
	kw_table(s, in.id, tab, sizeof tab, &n);
	CHECK_EQ(n, 0);
	r = store_req_new();
	store_req_user_quota(r, "alice", 0, 4);
	CHECK_EQ(store_req_run(s, r), STORE_OK);
	r = store_req_new();
	store_req_append(r, in.id, msg, 0, kw, 1, 0);
	CHECK_EQ(store_req_run(s, r), STORE_OVERQUOTA);
	kw_table(s, in.id, tab, sizeof tab, &n);
	CHECK_EQ(n, 0);
	store_msg_unref(msg);
	CHECK_EQ(mbox(s, "alice", "INBOX").messages, 2);

	/* COPY and MOVE carry keywords over by name into the destination's
	 * table; the source keeps its own. */
	const char *k2[] = { "Urgent" };
	CHECK_EQ(set_flags(s, in.id, 1, STORE_FLAGS_ADD, 0, k2, 1), STORE_OK);
	r = store_req_new();
	store_req_user_quota(r, "alice", 0, 0);
	store_req_copy(r, drafts.id, 1, in.id);         /* $Draft2 Urgent */
	store_req_move(r, drafts.id, 2, in.id, 0);      /* none */
	CHECK_EQ(run_results(s, &loop, r, &res), STORE_OK);
	kw_table(s, in.id, tab, sizeof tab, &n);
	CHECK(strcmp(tab, "Urgent,$Draft2") == 0);
	CHECK_EQ(msg_get(s, in.id, res.res[1].uid, &m), STORE_OK);
	CHECK_EQ(m.keywords, 3);
	CHECK_EQ(msg_get(s, in.id, res.res[2].uid, &m), STORE_OK);
	CHECK_EQ(m.keywords, 0);
	CHECK_EQ(msg_get(s, drafts.id, 1, &m), STORE_OK);
	CHECK_EQ(m.keywords, 3);
	/* A full destination table drops the names that do not fit. */
	struct store_mailbox junk = mbox(s, "alice", "Junk");
	char names[64][16];
	const char *nv[64];
	for (int i = 0; i < 64; i++) {
		snprintf(names[i], sizeof names[i], i == 10 ? "URGENT" : "j%d", i);
		nv[i] = names[i];
	}
	CHECK_EQ(deliver(s, "alice", "Junk", "x\r\n", 0), STORE_OK);
	CHECK_EQ(set_flags(s, junk.id, 1, STORE_FLAGS_ADD, 0, nv, 64), STORE_OK);
	r = store_req_new();
	store_req_move(r, drafts.id, 1, junk.id, 0);
	CHECK_EQ(run_results(s, &loop, r, &res), STORE_OK);
	CHECK_EQ(msg_get(s, junk.id, res.res[0].uid, &m), STORE_OK);
	CHECK(m.keywords == (uint64_t)1 << 10);
	kw_table(s, junk.id, tab, sizeof tab, &n);
	CHECK_EQ(n, 64);

	/* The blob goes with the body's last reference; deleting a mailbox
	 * drops its keyword table. */
	uint8_t mime_id[32];
	memcpy(mime_id, d1.body_id, 32);
	struct store_mailbox trash = mbox(s, "alice", "Trash");
	r = store_req_new();
	store_req_mailbox_delete(r, junk.id);
	store_req_mailbox_delete(r, trash.id);
	CHECK_EQ(store_req_run(s, r), STORE_OK);
	r = store_req_new();
	for (uint32_t uid = 1; uid < mbox(s, "alice", "INBOX").uidnext; uid++)
		store_req_expunge(r, in.id, uid);
	CHECK_EQ(store_req_run(s, r), STORE_OK);
	CHECK_EQ(mbox(s, "alice", "Drafts").messages, 0);
	CHECK_EQ(body_state(s, mime_id, NULL), 0);
	CHECK_EQ(mime_state(s, mime_id, "parts"), 0);
	CHECK_EQ(mime_state(s, d2.body_id, "one"), 0);
	close_loop(s, &loop);
	CHECK_EQ(blob_count(dir, &nbodies), 0);
	CHECK_EQ(nbodies, 0);
	CHECK_EQ(db_entries(dir, "keywords"), 2);       /* INBOX's and Drafts' */
	rmtree(dir);
}

/* A store made before the keywords and body_mime databases: read as it is
 * when opened read-only, upgraded when opened for writing. */
static void test_late_dbs(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	CHECK_EQ(deliver(s, "alice", NULL, MIME1, 0), STORE_OK);
	uint32_t inbox = mbox(s, "alice", "INBOX").id;
	store_close(s);
	CHECK_EQ(info_to_old_layout(dir, INFO_NO_BLOB), 1);

	MDB_dbi dbi;
	MDB_txn *txn = raw_begin(dir, true);
	CHECK_EQ(mdb_dbi_open(txn, "keywords", 0, &dbi), 0);
	CHECK_EQ(mdb_drop(txn, dbi, 1), 0);
	CHECK_EQ(mdb_dbi_open(txn, "body_mime", 0, &dbi), 0);
	CHECK_EQ(mdb_drop(txn, dbi, 1), 0);
	raw_end(txn, true);

	struct store_options ro = { .readonly = true };
	s = open_sync(dir, &ro);
	struct store_message m;
	CHECK_EQ(msg_get(s, inbox, 1, &m), STORE_OK);
	char tab[64];
	size_t n = 99;
	kw_table(s, inbox, tab, sizeof tab, &n);
	CHECK_EQ(n, 0);
	CHECK_EQ(mime_state(s, m.body_id, "parts"), 0);
	store_close(s);

	s = open_sync(dir, NULL);
	CHECK_EQ(mime_state(s, m.body_id, "parts"), 0);
	/* The same bytes delivered now are a body of their own, with its
	 * blob; the old body is read as it is. */
	CHECK_EQ(deliver(s, "alice", NULL, MIME1, 0), STORE_OK);
	struct store_message m2;
	CHECK_EQ(msg_get(s, inbox, 2, &m2), STORE_OK);
	CHECK(memcmp(m.body_id, m2.body_id, 32) != 0);
	CHECK_EQ(mime_state(s, m2.body_id, "parts"), 1);
	CHECK_EQ(mime_state(s, m.body_id, "parts"), 0);
	CHECK_EQ(body_state(s, m.body_id, MIME1), 1);
	const char *kw[] = { "Later" };
	CHECK_EQ(set_flags(s, inbox, 1, STORE_FLAGS_ADD, 0, kw, 1), STORE_OK);
	kw_table(s, inbox, tab, sizeof tab, &n);
	CHECK(strcmp(tab, "Later") == 0);
	store_close(s);
	rmtree(dir);
}

/* Read the format string of the store in DIR (closed) into BUF, and with
 * SET write SET there first. */
static void raw_format(const char *dir, const char *set, char *buf, size_t len)
{
	MDB_dbi dbi;
	char key[] = "format";
	MDB_val k = { 6, key }, v;
	MDB_txn *txn = raw_begin(dir, true);
	CHECK_EQ(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
	if (set) {
		char val[64];
		snprintf(val, sizeof val, "%s", set);
		v.mv_size = strlen(val);
		v.mv_data = val;
		CHECK_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
	}
	CHECK_EQ(mdb_get(txn, dbi, &k, &v), 0);
	snprintf(buf, len, "%.*s", (int)v.mv_size, (const char *)v.mv_data);
	raw_end(txn, true);
}

/* Format 1 stores are read as they are and become format 2 when opened
 * for writing; a later format is refused (an older onebox refuses 2 the
 * same way, since it would not find the info records next to the bytes). */
static void test_format_upgrade(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	CHECK_EQ(deliver(s, "alice", NULL, MIME1, 0), STORE_OK);
	store_close(s);
	char fmt[64];
	raw_format(dir, NULL, fmt, sizeof fmt);
	CHECK(strcmp(fmt, "onebox-store 3") == 0);

	/* Formats 1 and 2: read as they are, upgraded by a writer. */
	const char *older[] = { "onebox-store 1", "onebox-store 2" };
	for (int i = 0; i < 2; i++) {
		raw_format(dir, older[i], fmt, sizeof fmt);
		struct store_options ro = { .readonly = true };
		s = open_sync(dir, &ro);
		CHECK_EQ(mbox(s, "alice", "INBOX").messages, 1 + i);
		store_close(s);
		raw_format(dir, NULL, fmt, sizeof fmt);
		CHECK(strcmp(fmt, older[i]) == 0);
		s = open_sync(dir, NULL);
		CHECK_EQ(deliver(s, "alice", NULL, MSG1, 0), STORE_OK);
		CHECK_EQ(mbox(s, "alice", "INBOX").messages, 2 + i);
		store_close(s);
		raw_format(dir, NULL, fmt, sizeof fmt);
		CHECK(strcmp(fmt, "onebox-store 3") == 0);
	}

	raw_format(dir, "onebox-store 4", fmt, sizeof fmt);
	char err[512] = "";
	s = NULL;
	CHECK_EQ(store_open(&s, dir, NULL, NULL, err, sizeof err), STORE_CORRUPT);
	CHECK(strstr(err, "another format") != NULL);
	rmtree(dir);
}

/*
 * Stores before 2026-11-22 kept a body's info record in body_info, and its
 * blob in body_mime or after the 16 octets: both are read where they are,
 * a new reference updates them there (no second record next to the
 * bytes), and they go with the body's last reference.
 */
static void test_info_in_body_info(void)
{
	enum old_layout layouts[] = { INFO_BLOB_IN_MIME_DB, INFO_WITH_BLOB };
	for (size_t i = 0; i < 2; i++) {
		char *dir = tmpdir();
		store *s = open_sync(dir, NULL);
		CHECK_EQ(add_user(s, "alice"), STORE_OK);
		CHECK_EQ(deliver(s, "alice", NULL, MIME1, 0), STORE_OK);
		uint32_t inbox = mbox(s, "alice", "INBOX").id;
		store_close(s);
		CHECK_EQ(info_to_old_layout(dir, layouts[i]), 1);
		CHECK_EQ(db_entries(dir, "body_info"), 1);
		CHECK_EQ(db_entries(dir, "body_mime"), i == 0 ? 1 : 0);

		s = open_sync(dir, NULL);
		struct store_message m;
		CHECK_EQ(msg_get(s, inbox, 1, &m), STORE_OK);
		CHECK_EQ(mime_state(s, m.body_id, "parts"), 1);
		store_req *r = store_req_new();
		store_req_copy(r, inbox, 1, inbox);     /* UID 2, the same body */
		CHECK_EQ(one_op(s, r), STORE_OK);
		CHECK_EQ(mime_state(s, m.body_id, "parts"), 1);
		store_close(s);
		size_t nbodies = 0;
		CHECK_EQ(blob_count(dir, &nbodies), 1);
		CHECK_EQ(nbodies, 1);
		CHECK_EQ(db_entries(dir, "body_info"), 1);
		CHECK_EQ(db_entries(dir, "bodies"), 1);         /* no info record beside it */

		s = open_sync(dir, NULL);
		r = store_req_new();
		store_req_expunge(r, inbox, 1);
		CHECK_EQ(one_op(s, r), STORE_OK);
		CHECK_EQ(mime_state(s, m.body_id, "parts"), 1);         /* one reference left */
		r = store_req_new();
		store_req_expunge(r, inbox, 2);
		CHECK_EQ(one_op(s, r), STORE_OK);
		CHECK_EQ(body_state(s, m.body_id, NULL), 0);
		store_close(s);
		CHECK_EQ(blob_count(dir, &nbodies), 0);
		CHECK_EQ(nbodies, 0);
		CHECK_EQ(db_entries(dir, "body_info"), 0);
		rmtree(dir);
	}
}

/* Subscriptions are names apart from the mailboxes: DELETE and RENAME
 * leave them (RFC 3501 §6.3.6, RFC 9051 §6.3.6), CREATE adds none. */
static void test_subscriptions(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	CHECK_EQ(add_user(s, "bob"), STORE_OK);
	CHECK(strcmp(subs_of(s, "alice"), "Archive,Drafts,INBOX,Junk,Sent,Trash,") == 0);

	store_req *r = store_req_new();
	store_req_mailbox_create(r, "alice", "Lists/IETF", 0);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(subscribed(s, "alice", "Lists/IETF"), STORE_NOTFOUND);
	CHECK_EQ(subscribe(s, "alice", "Lists/IETF", true), STORE_OK);
	CHECK_EQ(subscribe(s, "alice", "Lists/IETF", true), STORE_OK);   /* idempotent */
	CHECK_EQ(subscribed(s, "alice", "Lists/IETF"), STORE_OK);
	CHECK_EQ(subscribed(s, "bob", "Lists/IETF"), STORE_NOTFOUND);
	/* INBOX in any case is INBOX. */
	CHECK_EQ(subscribe(s, "alice", "inbox", false), STORE_OK);
	CHECK_EQ(subscribed(s, "alice", "INBOX"), STORE_NOTFOUND);
	CHECK_EQ(subscribe(s, "alice", "Inbox", true), STORE_OK);
	CHECK_EQ(subscribed(s, "alice", "inBOX"), STORE_OK);
	/* A name without a mailbox may be subscribed (IMAP decides whether
	 * it must exist). */
	CHECK_EQ(subscribe(s, "alice", "Gone/Name", true), STORE_OK);
	CHECK_EQ(subscribe(s, "alice", "", true), STORE_INVALID);
	CHECK_EQ(subscribe(s, "alice", "bad\nname", true), STORE_INVALID);
	CHECK_EQ(subscribe(s, "nobody", "INBOX", true), STORE_NOTFOUND);
	/* A failing subscribe rolls back the operations before it. */
	r = store_req_new();
	store_req_subscribe(r, "alice", "Rolled", true);
	store_req_subscribe(r, "alice", "", true);
	CHECK_EQ(one_op(s, r), STORE_INVALID);
	CHECK_EQ(subscribed(s, "alice", "Rolled"), STORE_NOTFOUND);

	/* RENAME keeps the old name subscribed and subscribes nothing new. */
	struct store_mailbox m = mbox(s, "alice", "Lists/IETF");
	r = store_req_new();
	store_req_mailbox_rename(r, m.id, "Lists/Renamed");
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(subscribed(s, "alice", "Lists/IETF"), STORE_OK);
	CHECK_EQ(subscribed(s, "alice", "Lists/Renamed"), STORE_NOTFOUND);
	/* DELETE keeps the subscription; a mailbox made again under the name
	 * is subscribed again. */
	r = store_req_new();
	store_req_mailbox_rename(r, m.id, "Lists/IETF");
	CHECK_EQ(one_op(s, r), STORE_OK);
	r = store_req_new();
	store_req_mailbox_delete(r, m.id);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(mbox(s, "alice", "Lists/IETF").id, 0);
	CHECK_EQ(subscribed(s, "alice", "Lists/IETF"), STORE_OK);
	CHECK(strcmp(subs_of(s, "alice"),
	             "Archive,Drafts,Gone/Name,INBOX,Junk,Lists/IETF,Sent,Trash,") == 0);
	r = store_req_new();
	store_req_mailbox_create(r, "alice", "Lists/IETF", 0);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(subscribed(s, "alice", "Lists/IETF"), STORE_OK);
	/* UNSUBSCRIBE of a name without a mailbox, twice. */
	CHECK_EQ(subscribe(s, "alice", "Gone/Name", false), STORE_OK);
	CHECK_EQ(subscribe(s, "alice", "Gone/Name", false), STORE_OK);
	CHECK_EQ(subscribed(s, "alice", "Gone/Name"), STORE_NOTFOUND);
	/* Stopping the walk early. */
	store_txn *t = store_read_begin(s);
	struct store_user u;
	CHECK_EQ(store_user_get(t, "alice", &u), STORE_OK);
	int seen = 0;
	CHECK_EQ(store_subscription_foreach(t, u.id, stop_after_two, &seen), STORE_OK);
	CHECK_EQ(seen, 2);
	store_read_end(t);

	/* Deleting a user drops its subscriptions, and only its own. */
	r = store_req_new();
	store_req_user_del(r, "alice");
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK(strcmp(subs_of(s, "bob"), "Archive,Drafts,INBOX,Junk,Sent,Trash,") == 0);
	store_close(s);
	CHECK_EQ(db_entries(dir, "subscriptions"), 6);
	rmtree(dir);
}

/* The subscribed byte of a mailbox record, as stores made before the
 * `subscriptions` database kept it: after u8 version, u32 user id, u32
 * uidvalidity, u32 uidnext, u64 highestmodseq, u32 messages, u32 unseen,
 * u32 deleted, u64 bytes, u32 special use (docs/store.md).  The name
 * (u16 length, bytes) follows it. */
#define OLD_SUB_OFFSET 45

/* Make the store in DIR (closed) look as the previous version left it:
 * no `subscriptions` database, and the byte set in the records of the
 * mailboxes named in SUBS (a NULL-terminated list), clear in the others. */
static void make_old_store(const char *dir, const char *const *subs)
{
	MDB_dbi dbi;
	MDB_cursor *c;
	MDB_val k, v;
	MDB_txn *txn = raw_begin(dir, true);
	CHECK_EQ(mdb_dbi_open(txn, "subscriptions", 0, &dbi), 0);
	CHECK_EQ(mdb_drop(txn, dbi, 1), 0);
	CHECK_EQ(mdb_dbi_open(txn, "mailboxes", 0, &dbi), 0);
	CHECK_EQ(mdb_cursor_open(txn, dbi, &c), 0);
	int n = 0;
	for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && n < 1000;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT), n++) {
		uint8_t rec[512];
		CHECK(v.mv_size > OLD_SUB_OFFSET + 3 && v.mv_size <= sizeof rec);
		if (v.mv_size <= OLD_SUB_OFFSET + 3 || v.mv_size > sizeof rec)
			break;
		memcpy(rec, v.mv_data, v.mv_size);
		size_t nl = (size_t)rec[OLD_SUB_OFFSET + 1] << 8 | rec[OLD_SUB_OFFSET + 2];
		const char *name = (const char *)rec + OLD_SUB_OFFSET + 3;
		rec[OLD_SUB_OFFSET] = 0;
		for (const char *const *p = subs; *p; p++)
			if (strlen(*p) == nl && memcmp(*p, name, nl) == 0)
				rec[OLD_SUB_OFFSET] = 1;
		MDB_val nv = { v.mv_size, rec };
		CHECK_EQ(mdb_cursor_put(c, &k, &nv, MDB_CURRENT), 0);
	}
	mdb_cursor_close(c);
	raw_end(txn, true);
}

/* A store from before `subscriptions`: read-only opens read the old
 * bytes; the first open for writing copies them into the database, once. */
static void test_subs_migration(void)
{
	char *dir = tmpdir();
	store *s = open_sync(dir, NULL);
	CHECK_EQ(add_user(s, "alice"), STORE_OK);
	CHECK_EQ(add_user(s, "bob"), STORE_OK);
	store_req *r = store_req_new();
	store_req_mailbox_create(r, "alice", "Lists/IETF", 0);
	store_req_mailbox_create(r, "alice", "Lists/Other", 0);
	CHECK_EQ(one_op(s, r), STORE_OK);
	store_close(s);
	static const char *const old[] = { "INBOX", "Sent", "Lists/IETF", NULL };
	make_old_store(dir, old);
	CHECK_EQ(db_entries(dir, "subscriptions"), 0);

	struct store_options ro = { .readonly = true };
	s = open_sync(dir, &ro);
	CHECK(strcmp(subs_of(s, "alice"), "INBOX,Lists/IETF,Sent,") == 0);
	CHECK(strcmp(subs_of(s, "bob"), "INBOX,Sent,") == 0);
	CHECK_EQ(subscribed(s, "alice", "Lists/IETF"), STORE_OK);
	CHECK_EQ(subscribed(s, "alice", "inbox"), STORE_OK);
	CHECK_EQ(subscribed(s, "alice", "Lists/Other"), STORE_NOTFOUND);
	CHECK_EQ(subscribed(s, "alice", "Nope"), STORE_NOTFOUND);
	store_close(s);
	CHECK_EQ(db_entries(dir, "subscriptions"), 0);    /* read-only: untouched */

	s = open_sync(dir, NULL);
	CHECK(strcmp(subs_of(s, "alice"), "INBOX,Lists/IETF,Sent,") == 0);
	CHECK(strcmp(subs_of(s, "bob"), "INBOX,Sent,") == 0);
	/* From now on they are names: they outlive the mailbox. */
	r = store_req_new();
	store_req_mailbox_delete(r, mbox(s, "alice", "Lists/IETF").id);
	CHECK_EQ(one_op(s, r), STORE_OK);
	CHECK_EQ(subscribed(s, "alice", "Lists/IETF"), STORE_OK);
	CHECK_EQ(subscribe(s, "alice", "INBOX", false), STORE_OK);
	store_close(s);
	CHECK_EQ(db_entries(dir, "subscriptions"), 4);

	/* Once: INBOX's record still has the old byte set, and it is not
	 * copied again. */
	s = open_sync(dir, NULL);
	CHECK(strcmp(subs_of(s, "alice"), "Lists/IETF,Sent,") == 0);
	store_close(s);
	rmtree(dir);
}

int main(void)
{
	test_users();
	test_deliver();
	test_single_instance();
	test_crlf();
	test_crlf_random();
	test_prepare_order();
	test_recent_bodies();
	test_runway();
	test_flags_modseq();
	test_move_copy();
	test_mailboxes();
	test_quota();
	test_group_commit();
	test_watch();
	test_foreign();
	test_map_growth();
	test_map_resized_elsewhere();
	test_retention();
	test_keywords();
	test_append();
	test_late_dbs();
	test_info_in_body_info();
	test_format_upgrade();
	test_subscriptions();
	test_subs_migration();
	return check_summary();
}
