/*
 * sasl.h - the SASL server (RFC 4422) shared by the IMAP and POP3 front-ends:
 * PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login) and SCRAM-SHA-256
 * (RFC 5802, RFC 7677).
 *
 * Protocol-neutral: it takes client responses as decoded bytes and hands
 * back challenges as bytes; the front-end does the framing ("+ " lines,
 * base64, "*" cancellation, tagged or +OK/-ERR answers).  Credentials are
 * checked through the conn_auth_* services of protocols/proto.h, so the
 * server's cache, guessing delays and logging apply to every mechanism.
 * Also here: strict base64 and the SCRAM secret derivation used by
 * `onebox user add/passwd` (the RFC 5803 string stored with the user).
 */
#ifndef ONEBOX_SASL_H
#define ONEBOX_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocols/proto.h"

typedef struct sasl sasl;

enum sasl_mech { SASL_PLAIN, SASL_LOGIN, SASL_SCRAM_SHA_256, SASL_NMECHS };

enum sasl_status {
	SASL_CONTINUE,      /* send sasl_challenge(), pass the client's answer to sasl_step */
	SASL_PENDING,       /* the server is checking: the callback brings the outcome */
	SASL_SUCCESS,       /* authenticated as sasl_user() / sasl_user_id() */
	SASL_FAILED,        /* wrong credentials (the server already delayed the answer) */
	SASL_MALFORMED,     /* the response broke the mechanism's syntax */
	SASL_NOT_PERMITTED, /* an authorization identity other than the user's own */
	SASL_BAD_BASE64,    /* sasl_step_b64: the client's message is not base64 */
};

/* The longest client message, decoded (a SCRAM client-final message with
 * its proof is about 150 octets; PLAIN holds two names and a password). */
#define SASL_MAX_MESSAGE 4096

/* Which mechanisms a connection may use right now (the plaintext policy:
 * PLAIN and LOGIN need TLS or auth.allow_plaintext; SCRAM-SHA-256 is
 * always offered, as it never shows the password). */
enum sasl_usable { SASL_MECH_UNKNOWN, SASL_MECH_NEEDS_TLS, SASL_MECH_OK };
enum sasl_usable sasl_mech_usable(conn *c, const char *name);
/* Write the usable mechanism names into BUF, each preceded by PREFIX and
 * followed by SEP (" AUTH=" and "" for IMAP; "" and "\r\n" for POP3's AUTH
 * listing).  Truncated, always NUL-terminated. */
void sasl_mech_list(conn *c, const char *prefix, const char *sep, char *buf, size_t len);

/*
 * Start an exchange with mechanism NAME (case-insensitive; must be usable).
 * CB is called with SASL_CONTINUE, SASL_SUCCESS or SASL_FAILED when a step
 * returned SASL_PENDING; the front-end keeps input paused meanwhile and must
 * not free X until then (the connection is held).  NULL when out of memory
 * or NAME is not usable.
 */
typedef void (*sasl_cb)(sasl *x, void *arg, enum sasl_status st);
sasl *sasl_new(conn *c, const char *name, sasl_cb cb, void *arg);
/* One client message.  PRESENT false: the exchange starts without an
 * initial response (RFC 4422 section 5 item 2a).  An empty initial
 * response ("=" in IMAP/POP3) is PRESENT with LEN 0.  IN may be wiped. */
enum sasl_status sasl_step(sasl *x, unsigned char *in, size_t len, bool present);
/* sasl_step on one base64 client message as IMAP and POP3 carry it (RFC
 * 4422 section 4): decoded into a buffer that is wiped afterwards;
 * SASL_BAD_BASE64 if it does not decode (or is over SASL_MAX_MESSAGE). */
enum sasl_status sasl_step_b64(sasl *x, const char *b64, size_t len);
/* The challenge to send after SASL_CONTINUE (may be empty). */
const unsigned char *sasl_challenge(const sasl *x, size_t *len);
/* The same in base64, NUL-terminated, for the "+ " line; the caller
 * frees it.  NULL when out of memory. */
char *sasl_challenge_b64(const sasl *x);
/* After SASL_SUCCESS: the canonical user name and id. */
const char *sasl_user(const sasl *x);
uint32_t sasl_user_id(const sasl *x);
void sasl_free(sasl *x);

/* ------------------------------------------------------------- base64 */

/* Strict base64 (RFC 4648 section 4, padded, no whitespace): the decoded
 * length, or -1 if malformed or longer than CAP. */
long sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap);
/* Encode into OUT (NUL-terminated); returns the length, or 0 if CAP is
 * smaller than 4 * ceil(LEN / 3) + 1. */
size_t sasl_b64_encode(const unsigned char *in, size_t len, char *out, size_t cap);

/* ------------------------------------------------------- SCRAM secrets */

#define SASL_SCRAM_MIN_ITERATIONS 4096 /* RFC 7677 section 4 */
#define SASL_SCRAM_SALT_MAX 64

struct sasl_scram_secret {
	unsigned iterations;
	unsigned char salt[SASL_SCRAM_SALT_MAX];
	size_t salt_len;
	unsigned char stored_key[32];
	unsigned char server_key[32];
};

/* StoredKey and ServerKey for PASSWORD (RFC 5802 section 3).  The password
 * is used as given: SASLprep leaves ASCII unchanged and onebox does not
 * normalise other text (docs/security.md).  0, or -1 on a GnuTLS error. */
int sasl_scram_derive(const char *password, size_t plen, const unsigned char *salt,
                      size_t salt_len, unsigned iterations, struct sasl_scram_secret *out);
/* A new secret with a random 16-byte salt, as the RFC 5803 string
 * "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>"; the caller frees.
 * NULL on failure. */
char *sasl_scram_make(const char *password, unsigned iterations);
/* Parse an RFC 5803 string; false if it is not a SCRAM-SHA-256 secret. */
bool sasl_scram_parse(const char *s, struct sasl_scram_secret *out);

/* For tests only: the server nonce of X's next server-first message
 * (RFC 7677 section 3 uses a fixed one). */
void sasl_set_server_nonce(sasl *x, const char *nonce);

#endif
