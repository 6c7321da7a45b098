/*
 * cfg.h - the configuration file, loaded once into one validated struct.
 *
 * The file is libconfig syntax.  cfg_load() checks everything a running
 * daemon would trip on later: unknown keys, wrong types, out-of-range values,
 * unreadable certificate files, duplicate listeners.  Every error is written
 * as "FILE:LINE: message" so the user can go straight to it.
 */
#ifndef ONEBOX_CFG_H
#define ONEBOX_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "protocols/proto.h"

enum cfg_proto { CFG_IMAP, CFG_IMAPS, CFG_POP3, CFG_POP3S, CFG_LMTP };

/* quota.lmtp_over_quota: how a delivery over a user's quota is refused. */
enum cfg_over_quota { CFG_OVER_QUOTA_PERMANENT, CFG_OVER_QUOTA_TEMPORARY };

struct cfg_listen {
	enum cfg_proto protocol;
	char *address;  /* "127.0.0.1", "::1", "0.0.0.0", "::"; NULL with path */
	int port;       /* 1..65535; 0 with path */
	char *path;     /* unix socket path (lmtp only); NULL for TCP */
	int line;       /* line in the config file, for messages */
};

struct cfg_limits {
	unsigned max_connections;      /* all protocols together */
	unsigned max_per_address;      /* per client IP address */
	size_t max_line;               /* longest command line, octets */
	size_t max_output;             /* queued output before we stop reading */
	unsigned preauth_timeout;      /* seconds before login */
	unsigned imap_idle_timeout;    /* seconds, authenticated IMAP (>= 1800) */
	unsigned pop3_idle_timeout;    /* seconds, authenticated POP3 (>= 600) */
	unsigned lmtp_timeout;         /* seconds between LMTP commands */
	/* Commands per second a connection may send before it logs in, and
	 * how many it may send at once (a token bucket); rate 0: no limit. */
	unsigned preauth_command_rate;
	unsigned preauth_command_burst;
};

/* auth.*: the verification cache, SCRAM and the guessing limits
 * (docs/security.md).  Delays are in milliseconds. */
struct cfg_auth {
	unsigned cache_ttl;            /* seconds a verified password is cached; 0: off */
	unsigned cache_size;           /* entries at most */
	unsigned scram_iterations;     /* PBKDF2 rounds for new SCRAM secrets */
	unsigned fail_delay;           /* ms: the first delay */
	unsigned fail_delay_max;       /* ms: the cap of the doubling delay */
	unsigned fail_threshold;       /* failures per address/user before they are delayed */
	unsigned fail_window;          /* seconds after which an address/user's failures are forgotten */
	unsigned fail_table_size;      /* addresses and users tracked, each */
};

struct cfg {
	char *file;                    /* the path it was loaded from */
	char *user;                    /* drop privileges to this user; NULL: don't */
	char *hostname;                /* greeting name; default gethostname() */
	char *log_level;               /* "error", "warn", "info", "debug" */

	char *storage_path;            /* absolute path of the data folder */
	size_t storage_map_size;
	size_t storage_max_size;
	uint32_t storage_expunge_retention;

	/* quota.*: the limits of users without their own (`onebox user
	 * quota`), in every process that opens the store; 0: no limit. */
	size_t quota_storage;          /* octets */
	unsigned quota_messages;
	enum cfg_over_quota quota_over;

	char *tls_certificate;         /* NULL: no TLS */
	char *tls_key;
	char *tls_priorities;          /* GnuTLS priority string */

	struct cfg_listen *listen;
	size_t nlisten;

	struct cfg_limits limits;
	struct cfg_auth auth;
	struct proto_settings proto;   /* what the front-ends read */
};

/*
 * Load and validate FILE.  Returns a new cfg, or NULL after printing every
 * error found as "FILE:LINE: message" on ERRF.  Relative paths in the file
 * (storage.path, tls.*, unix sockets) are taken relative to the directory
 * holding FILE and stored absolute.
 */
struct cfg *cfg_load(const char *file, FILE *errf);
void cfg_free(struct cfg *c);

const char *cfg_proto_name(enum cfg_proto p);

#endif
