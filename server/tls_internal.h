/*
 * tls_internal.h - one connection's TLS session, between conn.c and tls.c.
 *
 * tls.c owns everything GnuTLS: credentials and, per connection, a server
 * session running on memory buffers.  conn.c owns the socket: it reads
 * ciphertext into tls_sess_inbuf(), and receives the ciphertext to send
 * through the PUSH callback given at creation.  Nothing here touches a
 * socket or the event loop.
 */
#ifndef ONEBOX_TLS_INTERNAL_H
#define ONEBOX_TLS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "server/server.h"

struct tls_sess;

/* Append LEN bytes of ciphertext to the connection's output queue. */
typedef void (*tls_push_fn)(void *arg, const void *p, size_t len);

/* A server session using T's current certificate (the session keeps that
 * certificate alive even if T is reloaded).  NULL on failure. */
struct tls_sess *tls_sess_new(tls_creds *t, tls_push_fn push, void *arg);
void tls_sess_free(struct tls_sess *s);

/* Room for ciphertext from the socket: returns a pointer and sets *ROOM
 * (0 when the input buffer is full: stop reading).  After the read, call
 * tls_sess_received with the count. */
char *tls_sess_inbuf(struct tls_sess *s, size_t *room);
void tls_sess_received(struct tls_sess *s, size_t n);
/* True when the ciphertext buffer has no room left (allocates nothing). */
bool tls_sess_in_full(const struct tls_sess *s);
/* The socket reached end of file: no more ciphertext will come. */
void tls_sess_set_eof(struct tls_sess *s);

/* Advance the handshake: 1 done, 0 needs more input, -1 failed (*WHY set). */
int tls_sess_handshake(struct tls_sess *s, const char **why);

/* Decrypt into BUF: > 0 bytes, 0 nothing available now, TLS_RECV_EOF when
 * the peer closed (close_notify or end of file), TLS_RECV_ERR on a fatal
 * error (*WHY set). */
enum { TLS_RECV_EOF = -1, TLS_RECV_ERR = -2 };
ssize_t tls_sess_recv(struct tls_sess *s, char *buf, size_t cap, const char **why);
/* True when decrypted or undecrypted input is buffered. */
bool tls_sess_has_input(struct tls_sess *s);

/* Encrypt LEN bytes (pushed out at once).  0, or -1 (*WHY set). */
int tls_sess_send(struct tls_sess *s, const void *p, size_t len, const char **why);
/* Send close_notify, best effort (RFC 8446 section 6.1). */
void tls_sess_bye(struct tls_sess *s);

/* "TLS1.3 AES-256-GCM" for the log; valid until the session is freed. */
void tls_sess_describe(struct tls_sess *s, char *buf, size_t len);

#endif
