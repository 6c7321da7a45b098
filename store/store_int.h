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
	size_t mime_len;           /* parsed at finish; NULL if none */
};

/* Fill *OUT for a finished message; false if M is not finished or could
 * not be built (out of memory, hash failure). */
bool store_msg_info_get(const store_msg *m, struct store_msg_info *out);

#endif
