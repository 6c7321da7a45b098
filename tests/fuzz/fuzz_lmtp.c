/*
 * fuzz_lmtp.c - libFuzzer target for the LMTP command reader: the whole
 * front-end (protocols/lmtp/lmtp.c with lmtp_parse.c, and the real
 * store_msg of store/msg.c that DATA fills) driven through the fake server
 * of fake.h by one client byte stream, as an MTA would send it.  An
 * optional first line "#fuzz: word ..." picks settings (fake.c).
 *
 * Store users are "alice" and "bob@example.com"; deliveries are checked to
 * name one of them and to carry a finished message.  Each input is then
 * also run through the DATA decoder twice, whole and in small pieces, and
 * the two results must agree: the decoder's state machine may not depend
 * on where the network cut the stream.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/lmtp/lmtp_parse.h"
#include "tests/fuzz/fake.h"

static const char *const users[] = { "alice", "bob@example.com" };

int store_user_get(store_txn *t, const char *name, struct store_user *out)
{
	for (size_t i = 0; i < sizeof users / sizeof users[0]; i++) {
		if (strcmp(name, users[i]) == 0) {
			memset(out, 0, sizeof *out);
			out->id = (uint32_t)i + 1;
			out->name = users[i];
			out->pass_hash = "";
			return STORE_OK;
		}
	}
	return STORE_NOTFOUND;
}

static void release_msg(void *m)
{
	store_msg_unref(m);
}

void store_req_deliver(store_req *r, const char *user, const char *mailbox, store_msg *m,
                       uint32_t flags, int64_t internal_date)
{
	bool known = false;

	for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
		known |= strcmp(user, users[i]) == 0;
	if (!known || !m) {
		fprintf(stderr, "lmtp delivered to an unknown user or without a message\n");
		abort();
	}
	(void)store_msg_data(m); /* touch it: ASan catches a freed message */
	store_msg_ref(m);
	r->release = release_msg;
	r->owned[r->nowned++] = m;
	fake_req_op(r);
}

struct sink {
	char *p;
	size_t len, cap;
};

static void sink_emit(void *arg, const char *p, size_t len)
{
	struct sink *s = arg;

	if (s->len + len > s->cap) {
		size_t cap = (s->len + len) * 2;
		char *n = realloc(s->p, cap);
		if (!n)
			abort();
		s->p = n;
		s->cap = cap;
	}
	memcpy(s->p + s->len, p, len);
	s->len += len;
}

/* Decode DATA whole and in pieces; the output and the point where the
 * terminator ends must be the same. */
static void check_dot_decoder(const uint8_t *data, size_t size)
{
	struct lmtp_dot_decoder d;
	struct sink whole = { 0 }, pieces = { 0 };
	bool done = false;
	size_t used1, used2 = 0;

	lmtp_dot_init(&d);
	used1 = lmtp_dot_decode(&d, (const char *)data, size, sink_emit, &whole, &done);
	if (used1 > size || (!done && used1 != size))
		abort();
	bool done1 = done;

	lmtp_dot_init(&d);
	done = false;
	for (size_t i = 0; used2 < size && !done; i++) {
		size_t n = (size_t)(data[i % size] % 5) + 1;
		if (n > size - used2)
			n = size - used2;
		size_t u = lmtp_dot_decode(&d, (const char *)data + used2, n, sink_emit, &pieces,
		                           &done);
		if (u > n || (!done && u != n))
			abort();
		used2 += u;
	}
	if (done1 != done || used1 != used2 || whole.len != pieces.len ||
	    (whole.len && memcmp(whole.p, pieces.p, whole.len) != 0)) {
		fprintf(stderr, "DATA decoder depends on how the input is cut\n");
		abort();
	}
	free(whole.p);
	free(pieces.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fake_session(&lmtp_ops, data, size);
	if (size > 0)
		check_dot_decoder(data, size);
	return 0;
}
