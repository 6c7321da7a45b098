/*
 * fuzz_pop3.c - libFuzzer target for the POP3 command reader: the whole
 * front-end (protocols/pop3/pop3.c) driven through the fake server of
 * fake.h by one client byte stream.  The input is what a client sends;
 * an optional first line "#fuzz: word ..." picks settings (fake.c).
 *
 * User alice (password "secret") has an INBOX with a handful of messages
 * chosen for the awkward cases: dot-stuffing, no blank line, no final CRLF,
 * a body larger than one read slice, one \Deleted (hidden from POP3) and
 * one expunged by "another session" after the snapshot.  bob ("hunter2")
 * has an empty INBOX and no Trash.  The store side checks that QUIT only
 * ever touches UIDs of the snapshot.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/sasl.h"
#include "tests/fuzz/fake.h"

#define ALICE_INBOX 10
#define ALICE_TRASH 11
#define BOB_INBOX 20

struct fake_msg {
	uint32_t uid, flags;
	bool gone; /* expunged since any snapshot: store_message_get fails */
	char *data;
	size_t len;
};

static struct fake_msg msgs[6];
static size_t nmsgs;

static void add_msg(uint32_t uid, uint32_t flags, bool gone, const char *text)
{
	struct fake_msg *m = &msgs[nmsgs++];

	m->uid = uid;
	m->flags = flags;
	m->gone = gone;
	m->data = strdup(text);
	m->len = strlen(text);
}

static void init_mailbox(void)
{
	static const char line[] = "0123456789 the quick brown fox jumps over it\r\n";
	size_t cap = 120 * 1024, len;
	char *big;

	if (nmsgs)
		return;
	add_msg(1, 0, false,
	        "From: Ann <ann@example.com>\r\nTo: alice@example.com\r\n"
	        "Subject: one\r\n\r\nHello\r\n.dot line\r\n..two dots\r\n.\r\nend\r\n");
	add_msg(2, STORE_F_DELETED, false, "Subject: flagged deleted\r\n\r\nhidden\r\n");
	add_msg(3, STORE_F_SEEN, false, "Subject: header only, no blank line\r\n");
	big = malloc(cap);
	if (!big)
		abort();
	len = (size_t)snprintf(big, cap, "Subject: big\r\n\r\n");
	for (int i = 0; len + sizeof line < cap - 16; i++) {
		if (i % 37 == 0)
			big[len++] = '.';
		memcpy(big + len, line, sizeof line - 1);
		len += sizeof line - 1;
	}
	big[len] = '\0';
	add_msg(4, 0, false, big);
	free(big);
	add_msg(7, 0, true, "Subject: expunged\r\n\r\ngone\r\n");
	add_msg(9, 0, false, "Subject: x\r\n\r\nno line end at the end");
}

static struct fake_msg *find_msg(uint32_t uid)
{
	for (size_t i = 0; i < nmsgs; i++)
		if (msgs[i].uid == uid)
			return &msgs[i];
	return NULL;
}

static void fill_message(const struct fake_msg *m, struct store_message *out)
{
	const char *sep = memmem(m->data, m->len, "\r\n\r\n", 4);

	memset(out, 0, sizeof *out);
	out->uid = m->uid;
	out->flags = m->flags;
	out->size = (uint32_t)m->len;
	out->header_size = sep ? (uint32_t)(sep - m->data) + 4 : (uint32_t)m->len;
	out->body_id[0] = (uint8_t)(m - msgs) + 1;
}

int store_mailbox_get(store_txn *t, uint32_t user_id, const char *name,
                      struct store_mailbox *out)
{
	if (strcmp(name, "INBOX") != 0 || (user_id != 1 && user_id != 2))
		return STORE_NOTFOUND;
	memset(out, 0, sizeof *out);
	out->id = user_id == 1 ? ALICE_INBOX : BOB_INBOX;
	out->user_id = user_id;
	out->name = "INBOX";
	out->uidvalidity = user_id == 1 ? 1700000000u : 42;
	out->messages = user_id == 1 ? (uint32_t)nmsgs : 0;
	for (size_t i = 0; user_id == 1 && i < nmsgs; i++)
		if (msgs[i].flags & STORE_F_DELETED)
			out->deleted++;
	return STORE_OK;
}

int store_mailbox_by_use(store_txn *t, uint32_t user_id, uint32_t use,
                         struct store_mailbox *out)
{
	if (user_id != 1 || use != STORE_USE_TRASH)
		return STORE_NOTFOUND;
	memset(out, 0, sizeof *out);
	out->id = ALICE_TRASH;
	out->user_id = 1;
	out->name = "Trash";
	out->special_use = STORE_USE_TRASH;
	return STORE_OK;
}

int store_message_foreach(store_txn *t, uint32_t mailbox_id, uint32_t first_uid,
                          int (*fn)(const struct store_message *, void *), void *arg)
{
	struct store_message m;

	if (mailbox_id != ALICE_INBOX)
		return STORE_OK;
	for (size_t i = 0; i < nmsgs; i++) {
		if (msgs[i].uid < first_uid)
			continue;
		fill_message(&msgs[i], &m);
		if (fn(&m, arg))
			break;
	}
	return STORE_OK;
}

int store_message_get(store_txn *t, uint32_t mailbox_id, uint32_t uid,
                      struct store_message *out)
{
	const struct fake_msg *m = mailbox_id == ALICE_INBOX ? find_msg(uid) : NULL;

	if (!m || m->gone)
		return STORE_NOTFOUND;
	fill_message(m, out);
	return STORE_OK;
}

/* Nothing changes between inputs: the list cache (protocols/uidcache.c)
 * finds its entry up to date. */
int store_changes_since(store_txn *t, uint32_t mailbox_id, uint64_t since,
                        int (*fn)(const struct store_change *, void *), void *arg)
{
	return STORE_OK;
}

int store_body_get(store_txn *t, const uint8_t body_id[32], const char **data,
                   size_t *len)
{
	size_t i = body_id[0];

	if (i == 0 || i > nmsgs)
		return STORE_NOTFOUND;
	*data = msgs[i - 1].data;
	*len = msgs[i - 1].len;
	return STORE_OK;
}

/* QUIT may only name UIDs the session listed. */
static void check_uid(uint32_t mailbox_id, uint32_t uid)
{
	const struct fake_msg *m = find_msg(uid);

	if (mailbox_id != ALICE_INBOX || !m || (m->flags & STORE_F_DELETED)) {
		fprintf(stderr, "pop3 touched mailbox %u uid %u outside its snapshot\n",
		        mailbox_id, uid);
		abort();
	}
}

void store_req_flags(store_req *r, uint32_t mailbox_id, uint32_t uid, uint32_t add,
                     uint32_t remove)
{
	check_uid(mailbox_id, uid);
	fake_req_op(r);
}

void store_req_expunge(store_req *r, uint32_t mailbox_id, uint32_t uid)
{
	check_uid(mailbox_id, uid);
	fake_req_op(r);
}

void store_req_move(store_req *r, uint32_t mailbox_id, uint32_t uid, uint32_t dest_id,
                    uint32_t drop_flags)
{
	check_uid(mailbox_id, uid);
	if (dest_id != ALICE_TRASH)
		abort();
	fake_req_op(r);
}

/* SASL SCRAM-SHA-256 (protocols/sasl.c): alice has a real secret, made
 * once; anyone else gets a fake one, as conn_auth_scram_lookup promises. */
void conn_auth_scram_lookup(conn *c, const char *user, struct conn_scram_cred *out)
{
	static char *alice;

	memset(out, 0, sizeof *out);
	if (!alice && !(alice = sasl_scram_make("secret", 4096)))
		abort();
	if (strcmp(user, "alice") == 0) {
		out->found = true;
		out->user_id = 1;
		snprintf(out->user, sizeof out->user, "alice");
		snprintf(out->secret, sizeof out->secret, "%s", alice);
	} else {
		snprintf(out->secret, sizeof out->secret,
		         "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$"
		         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:"
		         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init_mailbox();
	fake_session(&pop3_ops, data, size);
	return 0;
}
