/*
 * proto.h - the contract between a connection and a protocol front-end.
 *
 * server/ owns sockets, TLS, timeouts, limits, password checking and logging;
 * it implements the conn_* functions below.  A front-end (protocols/imap,
 * pop3, lmtp) implements a struct proto_ops and uses only this header and
 * store/store.h.  Knowledge flows one way: server -> protocols -> store.
 *
 * Input arrives in one of two modes.  In line mode (the default) each line
 * is handed to ops->line without its CRLF (or bare LF).  In bytes mode the
 * buffered input is handed to ops->bytes, which returns how much it used;
 * the rest is kept and offered again with the next input, or to ops->line
 * after the front-end returns to line mode.  Literals and LMTP DATA use
 * bytes mode.  All callbacks run on the loop thread.
 */
#ifndef ONEBOX_PROTO_H
#define ONEBOX_PROTO_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

typedef struct conn conn;

struct proto_ops {
	const char *name; /* "imap", "pop3", "lmtp": used in logs */
	/* The one line (with CRLF) written to a client refused because a
	 * connection limit is reached or the server is stopping. */
	const char *refuse_busy;
	/* The protocol has no login (LMTP: its peers are trusted MTAs that
	 * pipeline): the pre-login command rate limit never applies. */
	bool no_login;
	/* A connection was accepted (and, for implicit TLS, its handshake is
	 * done).  Create the session, write the greeting, return the session.
	 * NULL (out of memory) closes the connection; ops->close is not called. */
	void *(*open)(conn *c);
	/* One line, without its line end; LINE[LEN] is NUL and LINE is
	 * writable.  A line may hold NUL bytes: trust LEN. */
	void (*line)(void *sess, char *line, size_t len);
	/* Bytes mode: consume a prefix of P and return its length. */
	size_t (*bytes)(void *sess, const char *p, size_t len);
	/* A line grew past the limit; it was discarded up to its end. */
	void (*line_too_long)(void *sess);
	/* The output queue fell below the low-water mark (see conn_congested). */
	void (*drained)(void *sess);
	/* The idle timer expired.  The front-end may write a farewell; the
	 * connection is closed after this returns. */
	void (*timeout)(void *sess);
	/* The connection is gone and no conn_hold is outstanding: free SESS. */
	void (*close)(void *sess);
};

/* Settings the front-ends read; filled by the server from the config. */
enum pop3_delete_mode { POP3_DELETE_EXPUNGE, POP3_DELETE_FLAG, POP3_DELETE_TRASH };
enum pop3_uidl_format {
	POP3_UIDL_DOVECOT,  /* %08X UID then %08X UIDVALIDITY (default) */
	POP3_UIDL_CYRUS,    /* UIDVALIDITY.UID, decimal */
	POP3_UIDL_COURIER,  /* UIDVALIDITY-UID, decimal */
	POP3_UIDL_UW,       /* UIDVALIDITY and UID, %08x%08x lower-case */
};

/* Which non-synchronizing literals IMAP offers (RFC 7888), imap.nonsync_literals. */
enum imap_nonsync_literals {
	IMAP_NONSYNC_PLUS,  /* LITERAL+: "{N+}" of any size (default) */
	IMAP_NONSYNC_MINUS, /* LITERAL-: "{N+}" up to 4096 octets */
	IMAP_NONSYNC_OFF,   /* neither advertised: "{N+}" is refused */
};

struct proto_settings {
	const char *hostname;          /* used in greetings */
	bool allow_plaintext;          /* password auth without TLS */
	/* pop3 */
	enum pop3_delete_mode pop3_delete_mode;
	enum pop3_uidl_format pop3_uidl_format;
	bool pop3_lock_session;
	bool pop3_mark_seen;           /* RETR sets \Seen at QUIT */
	/* imap */
	enum imap_nonsync_literals imap_nonsync_literals;
	/* lmtp */
	size_t max_message_size;       /* octets; larger deliveries get 552 */
	unsigned lmtp_max_recipients;
	/* quota.lmtp_over_quota: a recipient over quota gets 452 4.2.2 (the
	 * MTA retries) instead of 552 5.2.2 (it bounces). */
	bool over_quota_temporary;
};

/* The store and settings this connection serves (never NULL while the
 * connection is open; the store is gone once the daemon is stopping). */
store *conn_store(conn *c);
const struct proto_settings *conn_settings(conn *c);

/* ------------------------------------------------------------- output */

/* Queue bytes for the client (encrypted if TLS is on).  Output is sent when
 * the current callback returns; it never blocks. */
void conn_write(conn *c, const void *p, size_t len);
void conn_puts(conn *c, const char *s);
void conn_printf(conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hand what is queued to the kernel now rather than when the loop gets to
 * this connection.  For an answer that should not wait behind work the loop
 * is about to do in the same turn: LMTP's replies after a commit go out
 * before the store wakes every session watching the mailbox. */
void conn_flush(conn *c);
/* Bytes queued and not yet taken by the kernel. */
size_t conn_queued(const conn *c);
/* True when the queue is over the high-water mark: stop producing and wait
 * for ops->drained.  While congested the connection reads no input. */
bool conn_congested(const conn *c);

/* -------------------------------------------------------------- input */

void conn_mode_line(conn *c);  /* deliver input to ops->line (default) */
void conn_mode_bytes(conn *c); /* deliver input to ops->bytes */
/* Stop handing input to the front-end (e.g. while a store request or a
 * password check is in flight); input stays buffered, up to a limit after
 * which the socket is not read.  conn_resume hands over what is buffered
 * later, from the loop, never from inside conn_resume itself. */
void conn_pause(conn *c);
void conn_resume(conn *c);

/* ---------------------------------------------------------- lifecycle */

/* Flush what is queued, then close.  No further callbacks but ops->close. */
void conn_close(conn *c);
/* True once conn_close was called or the peer went away. */
bool conn_closed(const conn *c);
/* Keep the session alive across an asynchronous operation: ops->close is
 * delayed until every hold is released.  A completion callback checks
 * conn_closed() first, then releases. */
void conn_hold(conn *c);
void conn_release(conn *c);
/* (Re)arm the idle timer: ops->timeout after SECS seconds without input. */
void conn_set_timeout(conn *c, unsigned secs);
/* The configured timeouts, for the front-end to choose from: before login,
 * and after login for this connection's protocol (limits.*_idle_timeout,
 * or limits.lmtp_timeout for LMTP). */
unsigned conn_preauth_timeout(const conn *c);
unsigned conn_idle_timeout(const conn *c);

/* ---------------------------------------------------------------- TLS */

bool conn_is_tls(const conn *c);
bool conn_tls_available(const conn *c); /* a certificate is configured */
/* Upgrade to TLS (STARTTLS/STLS).  Call after writing the positive answer:
 * that answer is sent in clear, every byte the client sent after the
 * command is discarded (RFC 2595 section 3.1; RFC 3501 section 6.2.1), and
 * the handshake starts.  Returns 0, or -1 if TLS is on or unavailable. */
int conn_starttls(conn *c);

/* ----------------------------------------------------------- COMPRESS */

/* Turn on DEFLATE compression both ways (IMAP COMPRESS, RFC 4978).  Call
 * right after writing the positive answer: that answer goes out as is,
 * everything written afterwards is deflated (and flushed whenever the
 * connection sends), and every byte read after the command, including
 * bytes the client pipelined behind it, is inflated before line or bytes
 * processing.  Compression sits inside TLS; STARTTLS is refused after it.
 * Returns 0, or -1 if it is already on or memory ran out (the client now
 * compresses: close the connection).  A broken compressed stream from the
 * client closes the connection with a log line. */
int conn_compress_start(conn *c);
/* End compression both ways (UNAUTHENTICATE, RFC 8437 section 4.1).  Call
 * right after writing the last compressed answer: it is deflated and our
 * stream ended with a final block, and everything written afterwards goes
 * out clear.  Input is still inflated until the client's stream ends (it
 * ends it after its command line); the bytes after that end are clear
 * input.  A client that ends its stream without this call has ended its
 * input.  Nothing happens if compression is off or already stopping. */
void conn_compress_stop(conn *c);
/* True from conn_compress_start until the client's stream has ended after
 * conn_compress_stop; a new conn_compress_start needs it false. */
bool conn_compressed(const conn *c);

/* --------------------------------------------------------------- auth */

/*
 * Check USER's PASSWORD against the store, on the thread pool.  CB runs on
 * the loop thread with ok set and the user's canonical name and id, or ok
 * false (no such user and wrong password look the same, and take the same
 * time).  The connection is held across the check; CB must check
 * conn_closed(c).  Failures are logged and counted for the guessing limits.
 */
typedef void (*conn_auth_cb)(conn *c, void *sess, bool ok, const char *user,
                             uint32_t user_id);
void conn_auth_password(conn *c, const char *user, const char *password,
                        conn_auth_cb cb);

/*
 * The same family with a caller's ARG instead of the session (used by
 * protocols/sasl.c, whose exchange object is not the session).  Every
 * answer comes from the loop, never from inside the call; a failure is
 * delayed per the guessing limits (auth.fail_*), a success never.
 */
typedef void (*conn_auth_arg_cb)(conn *c, void *arg, bool ok, const char *user,
                                 uint32_t user_id);
/* conn_auth_password with ARG; the verification cache applies. */
void conn_auth_password_arg(conn *c, const char *user, const char *password,
                            conn_auth_arg_cb cb, void *arg);

/* SCRAM-SHA-256 credentials of a user, looked up in a short read
 * transaction on the loop (no hashing: the client does the PBKDF2). */
struct conn_scram_cred {
	bool found;          /* false: no such user, or no SCRAM secret stored */
	uint32_t user_id;
	char user[256];      /* canonical name when found */
	/* RFC 5803 "SCRAM-SHA-256$iter:salt$StoredKey:ServerKey".  When not
	 * found, a fake one with a salt stable per name, so that unknown
	 * users cannot be told apart by their salt (RFC 5802 section 9). */
	char secret[256];
};
void conn_auth_scram_lookup(conn *c, const char *user, struct conn_scram_cred *out);
/* Account for the outcome of a check the front-end did itself (SCRAM):
 * log, count failures, delay them, then CB from the loop. */
void conn_auth_report(conn *c, const char *user, bool ok, uint32_t user_id,
                      conn_auth_arg_cb cb, void *arg);

/* ------------------------------------------------------------ logging */

/* Peer address as "ip:port" or "unix". */
const char *conn_peer(const conn *c);
/* Name the authenticated user in this connection's log lines.  This is
 * also what marks the connection as logged in: before it, every protocol
 * but LMTP is held to limits.preauth_command_rate (an excess command waits,
 * input paused, until the rate allows it).  NULL marks it logged out. */
void conn_set_user(conn *c, const char *user);
enum log_level { LOGL_ERR = 0, LOGL_WARN, LOGL_INFO, LOGL_DEBUG };
void conn_log(conn *c, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The front-ends, implemented in protocols/<name>/. */
extern const struct proto_ops lmtp_ops;
extern const struct proto_ops pop3_ops;
extern const struct proto_ops imap_ops;

#endif
