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
	uint8_t id[32];         /* SHA-256 of the bytes: the body's key */
	const unsigned char *mime; /* its MIME structure (mime_serialize), */
	size_t mime_len;           /* parsed when sealed; NULL if none */
};

/* Hash and parse a finished message, once (a no-op after that, and on a
 * message not finished).  Called by one thread at a time: the store hands
 * a message from thread to thread under its mutex. */
void store_msg_seal(store_msg *m);

/* The work of sealing M, in octets to hash: those not hashed yet, plus
 * an eighth of its size for the MIME parse; 0 once sealed. */
size_t store_msg_unsealed(const store_msg *m);

/* The prepare thread's side of store_msg_feed: hash the next stretch of
 * what the loop has appended to M so far.  Safe while the loop appends,
 * and a no-op once M is sealed.  True if it hashed a whole stretch (more
 * may be waiting). */
bool store_msg_hash_some(store_msg *m);

/* Octets appended to M and not yet hashed. */
size_t store_msg_unhashed(const store_msg *m);

/* Mark M as in (ON) or out of the store's queue of messages to hash; true
 * if that changed the mark. */
bool store_msg_queued_set(store_msg *m, bool on);

/* Fill *OUT for a sealed message; false if M is not sealed or could not
 * be built (out of memory, hash failure). */
bool store_msg_info_get(const store_msg *m, struct store_msg_info *out);

/* For the tests: data.mdb's used length as of the writer's last commit
 * and how far past it the runway is ready; false if the store has no
 * runway (no loop, or no fallocate where it lives). */
bool store_runway_get(store *s, uint64_t *used, uint64_t *ready);

#endif
