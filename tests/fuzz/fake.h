/*
 * fake.h - an in-memory stand-in for server/ (the conn_* services of
 * protocols/proto.h) and for the parts of store/ a front-end's command
 * reader reaches, so that the POP3 and LMTP front-ends can be driven by a
 * fuzzer, or by a regression file, one client byte stream at a time.
 *
 * The fake mimics server/conn.c where it matters to a front-end: lines are
 * split on LF with an optional CR, over-long lines go to ops->line_too_long,
 * bytes mode hands over what is buffered, pause/resume and holds are
 * honoured, output past a high-water mark makes the connection congested
 * until the "loop" drains it and calls ops->drained, and completions (store
 * requests, password checks) run later from the loop, never inside the call
 * that queued them.  It checks the contract on the way (balanced read
 * transactions and holds, no callback after close) and aborts on a breach,
 * which the fuzzer reports as a crash.
 *
 * Each target defines the store_* lookups its front-end uses; the common
 * request machinery is here.
 */
#ifndef ONEBOX_FUZZ_FAKE_H
#define ONEBOX_FUZZ_FAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocols/proto.h"

#define FAKE_MAX_OPS 64

/* What one session runs under; reset by fake_session() from the
 * "#fuzz: word ..." first line of the input, if there is one. */
struct fake_options {
	struct proto_settings set;
	bool tls_available;  /* "tls": a certificate is configured */
	bool is_tls;         /* "secure": the connection is already TLS */
	int req_status;      /* "fail-store": requests fail with TEMPFAIL,
	                      * "over-quota": with OVERQUOTA */
	bool read_fail;      /* "fail-read": store_read_begin returns NULL */
	bool auth_fail;      /* "fail-auth": every password is wrong */
	size_t max_line;     /* "short-lines": 64, else 8192 */
	size_t high_water;   /* "slow-reader": 512, else 64 KiB */
};

extern struct fake_options fake;

/* A store request as the fake records it. */
struct store_req {
	size_t nops;
	struct store_result res[FAKE_MAX_OPS];
	int status;
	store_req_cb cb;
	void *arg;
	/* Released with the request (a store_msg reference, for LMTP). */
	void *owned[FAKE_MAX_OPS];
	size_t nowned;
	void (*release)(void *owned);
};

/* Add an operation to R; returns its result slot (NULL past FAKE_MAX_OPS,
 * which aborts: no front-end should build such a request here). */
struct store_result *fake_req_op(store_req *r);

/*
 * Run one session of OPS over the client bytes DATA/LEN: open, feed the
 * input, run the loop until idle, then the client goes away and the
 * session is closed.  Aborts if the front-end breaks the contract.
 */
void fake_session(const struct proto_ops *ops, const uint8_t *data, size_t len);

/* The store handle and mailbox user the fake hands out. */
extern store *const fake_store;

#endif
