/*
 * server.h - the daemon's shared state and the server-internal interfaces:
 * listeners, the connection layer, TLS credentials, password checks, logs.
 *
 * One struct server exists per `onebox serve`; everything here runs on its
 * libuv loop thread unless a comment says otherwise.  The front-ends never
 * see this header; they get protocols/proto.h.
 */
#ifndef ONEBOX_SERVER_H
#define ONEBOX_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "protocols/proto.h"
#include "server/cfg.h"
#include "store/store.h"

typedef struct tls_creds tls_creds;
struct addr_count;

struct server {
	uv_loop_t *loop;
	struct cfg *cfg;
	store *store;
	tls_creds *tls;              /* NULL without a certificate */
	bool stopping;               /* SIGTERM seen: accept nothing new */

	struct listener *listeners;  /* one per cfg->listen entry */
	size_t nlisteners;

	unsigned nconns;             /* open connections, all protocols */
	struct conn *conns;          /* list of open connections */
	struct addr_count *per_addr; /* open connections per client address */
	uint64_t next_session_id;
};

/* --- listener.c: bind every configured address (before dropping
 * privileges), then start accepting. */
int listeners_bind(struct server *srv);      /* 0, or -1 after logging why */
int listeners_start(struct server *srv);     /* begin accepting */
void listeners_close(struct server *srv);    /* stop accepting, close sockets */

/* --- conn.c: the connection layer.  conn_accept takes a freshly accepted
 * client stream (TCP or pipe), applies the connection limits, and runs
 * OPS over it, with implicit TLS first when IMPLICIT_TLS. */
void conn_accept(struct server *srv, uv_stream_t *client,
                 const struct proto_ops *ops, bool implicit_tls);
/* Close every connection (graceful stop); ops->close runs for each once its
 * holds are released. */
void conn_close_all(struct server *srv);
/* The server and the front-end session of a connection (for auth.c). */
struct server *conn_server(const conn *c);
void *conn_session(const conn *c);
/* The client's IP (16 bytes, IPv4 mapped into IPv6), NULL for a unix
 * socket; and the connection's count of failed logins (for auth.c). */
const unsigned char *conn_addr(const conn *c);
unsigned *conn_auth_failures(conn *c);

/* --- tls.c: certificate and key, reloadable on SIGHUP. */
tls_creds *tls_creds_load(const char *cert, const char *key, const char *priorities,
                          char *err, size_t errlen);
/* Load the files again; on failure keep the old credentials and return -1. */
int tls_creds_reload(tls_creds *t, char *err, size_t errlen);
void tls_creds_free(tls_creds *t);

/* --- auth.c: password hashing (libcrypt). */
/* Hash PASSWORD with yescrypt (SHA-512-crypt if libcrypt lacks it); the
 * caller frees.  NULL on failure.  Slow on purpose: not on the loop. */
char *auth_hash_password(const char *password);
/* Compare PASSWORD with crypt(3) string HASH in constant time; an empty or
 * unusable HASH never matches (but costs the same time). */
bool auth_check_password(const char *password, const char *hash);
/* The daemon is stopping: answer every delayed login now (auth.c keeps
 * failure answers waiting on timers; see docs/security.md). */
void auth_stop(void);

/* --- log.c: log lines on stderr. */
void log_set_level(int level);           /* LOGL_* */
int log_level_parse(const char *name);   /* -1 if unknown */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int level, const char *prefix, const char *fmt, va_list ap);

#endif
