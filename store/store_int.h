/*
 * store_int.h - what store.c needs to know of a finished store_msg beyond
 * store/store.h.  Private to store/: the front-ends never include it.
 */
#ifndef ONEBOX_STORE_INT_H
#define ONEBOX_STORE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

/* What the writer stores beside the bytes of a finished message. */
struct store_msg_info {
	const char *data;       /* CRLF bytes, SIZE octets */
	uint64_t size;
	uint64_t lines;
	uint64_t header_size;
	const unsigned char *mime; /* its MIME structure (mime_serialize), */
	size_t mime_len;           /* parsed when sealed; NULL if none */
};

/* Parse a finished message's MIME structure, once (a no-op after that,
 * and on a message not finished).  Called by one thread at a time: the
 * store hands a message from thread to thread under its mutex. */
void store_msg_seal(store_msg *m);

/* The octets of M left to parse: its size until it is sealed, then 0. */
size_t store_msg_unsealed(const store_msg *m);

/* Fill *OUT for a sealed message; false if M is not sealed or could not
 * be built (out of memory). */
bool store_msg_info_get(const store_msg *m, struct store_msg_info *out);

/* For the tests: data.mdb's used length as of the writer's last commit
 * and how far past it the runway is ready; false if the store has no
 * runway (no loop, or no fallocate where it lives). */
bool store_runway_get(store *s, uint64_t *used, uint64_t *ready);

#endif
