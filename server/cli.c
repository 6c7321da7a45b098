/*
 * cli.c - `onebox check`, `onebox user ...` and `onebox deliver`.
 *
 * Each opens the store without a loop, so writes are applied in this
 * process in their own durable transaction.  A running daemon sees them
 * through the store's change feed (within a second for IDLE clients).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/cli.h"
#include "protocols/sasl.h"
#include "server/server.h"
#include "store/store.h"

#define MAX_PASSWORD 1024

static struct cfg *load(const char *cfgfile)
{
	return cfg_load(cfgfile, stderr);
}

static store *open_store(const struct cfg *cfg, bool readonly, int *status)
{
	struct store_options so = {
		.map_size = cfg->storage_map_size,
		.max_map_size = cfg->storage_max_size,
		.expunge_retention = cfg->storage_expunge_retention,
		.readonly = readonly,
		/* The same defaults as the daemon: both processes write. */
		.default_quota_bytes = cfg->quota_storage,
		.default_quota_messages = cfg->quota_messages,
	};
	store *s = NULL;
	char err[512];
	int rc = store_open(&s, cfg->storage_path, &so, NULL, err, sizeof err);
	if (rc != STORE_OK) {
		fprintf(stderr, "onebox: %s\n", err);
		s = NULL;
	}
	if (status)
		*status = rc;
	return s;
}

/* The password is the first line of stdin (so `echo pw | onebox user add`
 * and a here-document both work); its line end is not part of it. */
static int read_password(char *buf, size_t size)
{
	if (!fgets(buf, (int)size, stdin)) {
		fprintf(stderr, "onebox: expected the password on the first line of stdin\n");
		return -1;
	}
	size_t n = strlen(buf);
	if (n == size - 1 && buf[n - 1] != '\n') {
		fprintf(stderr, "onebox: password longer than %d bytes\n", MAX_PASSWORD - 1);
		return -1;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	if (n == 0) {
		fprintf(stderr, "onebox: empty password refused\n");
		return -1;
	}
	return 0;
}

static int cmd_check(const char *cfgfile)
{
	struct cfg *cfg = load(cfgfile);
	if (!cfg)
		return CLI_EX_ERROR;
	int rc = CLI_EX_OK;
	/* An existing store must be one we can open; a missing one is created
	 * by the first `serve` or `user add`. */
	char mdb[4096];
	struct stat st;
	snprintf(mdb, sizeof mdb, "%s/data.mdb", cfg->storage_path);
	if (stat(mdb, &st) == 0) {
		store *s = open_store(cfg, true, NULL);
		if (!s)
			rc = CLI_EX_ERROR;
		else
			store_close(s);
	}
	if (rc == CLI_EX_OK)
		printf("%s: configuration is valid\n", cfg->file);
	cfg_free(cfg);
	return rc;
}

static int set_password(const struct cfg *cfg, const char *name, bool add)
{
	char pw[MAX_PASSWORD];
	if (read_password(pw, sizeof pw) != 0)
		return CLI_EX_ERROR;
	char *hash = auth_hash_password(pw);
	/* The SCRAM-SHA-256 secret (RFC 5802 section 3) is derived now, the
	 * only time the clear password is at hand; it is never stored. */
	char *scram = sasl_scram_make(pw, cfg->auth.scram_iterations);
	explicit_bzero(pw, sizeof pw);
	if (!hash || !scram) {
		fprintf(stderr, "onebox: password hashing failed\n");
		free(hash);
		free(scram);
		return CLI_EX_ERROR;
	}
	if (drop_privileges(cfg) != 0) {
		free(hash);
		free(scram);
		return CLI_EX_ERROR;
	}
	store *s = open_store(cfg, false, NULL);
	if (!s) {
		free(hash);
		free(scram);
		return CLI_EX_ERROR;
	}
	store_req *r = store_req_new();
	if (add)
		store_req_user_add_scram(r, name, hash, scram);
	else
		store_req_user_passwd_scram(r, name, hash, scram);
	free(hash);
	free(scram);
	int st = store_req_run(s, r);
	store_close(s);
	switch (st) {
	case STORE_OK:
		return CLI_EX_OK;
	case STORE_EXISTS:
		fprintf(stderr, "onebox: user %s already exists\n", name);
		return CLI_EX_ERROR;
	case STORE_NOTFOUND:
		fprintf(stderr, "onebox: no such user: %s\n", name);
		return CLI_EX_ERROR;
	default:
		fprintf(stderr, "onebox: %s: %s\n", name, store_strerror(st));
		return CLI_EX_ERROR;
	}
}

static int user_del(const struct cfg *cfg, const char *name)
{
	if (drop_privileges(cfg) != 0)
		return CLI_EX_ERROR;
	store *s = open_store(cfg, false, NULL);
	if (!s)
		return CLI_EX_ERROR;
	store_req *r = store_req_new();
	store_req_user_del(r, name);
	int st = store_req_run(s, r);
	store_close(s);
	if (st == STORE_OK)
		return CLI_EX_OK;
	fprintf(stderr, "onebox: %s: %s\n", name,
	        st == STORE_NOTFOUND ? "no such user" : store_strerror(st));
	return CLI_EX_ERROR;
}

static int print_user(const struct store_user *u, void *arg)
{
	(void)arg;
	printf("%s\n", u->name);
	return 0;
}

static int user_list(const struct cfg *cfg)
{
	if (drop_privileges(cfg) != 0)
		return CLI_EX_ERROR;
	store *s = open_store(cfg, false, NULL);
	if (!s)
		return CLI_EX_ERROR;
	int rc = CLI_EX_ERROR;
	store_txn *t = store_read_begin(s);
	if (t) {
		if (store_user_foreach(t, print_user, NULL) == STORE_OK)
			rc = CLI_EX_OK;
		store_read_end(t);
	}
	store_close(s);
	return rc;
}

/* "0" or "none": no limit; "default": the config's quota.* applies; else
 * a number with an optional K/M/G/T suffix (powers of 1024), as in the
 * config file.  The result is what the store keeps as the user's own. */
static int parse_quota(const char *arg, bool size, uint64_t *out)
{
	char *end;
	if (!strcmp(arg, "none")) {
		*out = STORE_QUOTA_NONE;
		return 0;
	}
	if (!strcmp(arg, "default")) {
		*out = STORE_QUOTA_DEFAULT;
		return 0;
	}
	errno = 0;
	unsigned long long v = strtoull(arg, &end, 10);
	if (errno || end == arg || arg[0] == '-')
		return -1;
	if (size && *end) {
		const char *units = "KMGT";
		const char *u = strchr(units, *end & ~0x20);
		if (!u || end[1])
			return -1;
		for (const char *k = units; k <= u; k++) {
			if (v > UINT64_MAX / 1024)
				return -1;
			v *= 1024;
		}
	} else if (*end) {
		return -1;
	}
	/* 0 was "no limit" before defaults existed, and still is. */
	*out = v == 0 || v == STORE_QUOTA_NONE ? STORE_QUOTA_NONE : v;
	return 0;
}

/* Where a limit in force comes from, for `user quota NAME`. */
static const char *quota_source(uint64_t own)
{
	return own == STORE_QUOTA_DEFAULT ? "default" : "own";
}

/*
 * `user quota NAME` shows the quota and usage; with --bytes SIZE and/or
 * --messages N it sets them (0 or "none": no limit, "default": follow the
 * config's quota.*), keeping the other as it was set.
 */
static int user_quota(const struct cfg *cfg, const char *name, const char **opts, int nopts)
{
	bool set_bytes = false, set_msgs = false;
	uint64_t bytes = 0, msgs = 0;
	for (int i = 0; i < nopts; i += 2) {
		bool is_bytes = !strcmp(opts[i], "--bytes");
		if ((!is_bytes && strcmp(opts[i], "--messages")) || i + 1 >= nopts)
			return CLI_EX_USAGE;
		if (parse_quota(opts[i + 1], is_bytes, is_bytes ? &bytes : &msgs) != 0) {
			fprintf(stderr, "onebox: bad quota value: %s\n", opts[i + 1]);
			return CLI_EX_ERROR;
		}
		*(is_bytes ? &set_bytes : &set_msgs) = true;
	}
	if (drop_privileges(cfg) != 0)
		return CLI_EX_ERROR;
	store *s = open_store(cfg, false, NULL);
	if (!s)
		return CLI_EX_ERROR;
	struct store_user u;
	int st = STORE_TEMPFAIL;
	store_txn *t = store_read_begin(s);
	if (t) {
		st = store_user_get(t, name, &u);
		if (st == STORE_OK && !set_bytes && !set_msgs)
			printf("%s: storage %" PRIu64 " of %" PRIu64 " bytes [%s], "
			       "%" PRIu64 " of %" PRIu64 " messages [%s] (0: no limit)\n",
			       u.name, u.used_bytes, u.quota_bytes, quota_source(u.own_quota_bytes),
			       u.used_messages, u.quota_messages,
			       quota_source(u.own_quota_messages));
		if (st == STORE_OK) {
			/* The other value as set, not as in force: a user who
			 * follows the default keeps following it. */
			bytes = set_bytes ? bytes : u.own_quota_bytes;
			msgs = set_msgs ? msgs : u.own_quota_messages;
		}
		store_read_end(t);
	}
	if (st == STORE_OK && (set_bytes || set_msgs)) {
		store_req *r = store_req_new();
		store_req_user_quota(r, name, bytes, msgs);
		st = store_req_run(s, r);
	}
	store_close(s);
	if (st == STORE_OK)
		return CLI_EX_OK;
	fprintf(stderr, "onebox: %s: %s\n", name,
	        st == STORE_NOTFOUND ? "no such user" : store_strerror(st));
	return CLI_EX_ERROR;
}

static int cmd_user(const char **args, int nargs, const char *cfgfile)
{
	if (nargs < 1)
		return CLI_EX_USAGE;
	const char *verb = args[0];
	bool quota = !strcmp(verb, "quota");
	bool needs_name = strcmp(verb, "list") != 0;
	if (quota ? nargs < 2 : nargs != (needs_name ? 2 : 1))
		return CLI_EX_USAGE;
	if (strcmp(verb, "add") && strcmp(verb, "passwd") && strcmp(verb, "del") &&
	    strcmp(verb, "list") && !quota)
		return CLI_EX_USAGE;
	struct cfg *cfg = load(cfgfile);
	if (!cfg)
		return CLI_EX_ERROR;
	int rc;
	if (!strcmp(verb, "add"))
		rc = set_password(cfg, args[1], true);
	else if (!strcmp(verb, "passwd"))
		rc = set_password(cfg, args[1], false);
	else if (!strcmp(verb, "del"))
		rc = user_del(cfg, args[1]);
	else if (quota)
		rc = user_quota(cfg, args[1], args + 2, nargs - 2);
	else
		rc = user_list(cfg);
	cfg_free(cfg);
	return rc;
}

/* sysexits(3) EX_NOPERM: refused for good, but not "no such user" (67),
 * which MTAs and list managers read as an address that does not exist.
 * Dovecot's LDA exits with it for a rejected mail too. */
#define DELIVER_EX_REFUSED 77

/*
 * Exit codes follow sysexits(3) as MTAs read them: 0 stored durably,
 * 67 no such user (bounce), 77 over quota with quota.lmtp_over_quota
 * "permanent" (bounce), 75 temporary (the MTA retries): a full disk, a
 * quota with "temporary", an unreadable config or a damaged store are all
 * worth a retry once the administrator has looked.  The message about a
 * quota or a full disk starts with its RFC 3463 code, the one LMTP would
 * give: Postfix's pipe(8) and local(8) report that code rather than the
 * one they would derive from the exit status.
 */
static int cmd_deliver(const char **args, int nargs, const char *cfgfile)
{
	if (nargs != 1)
		return CLI_EX_USAGE;
	const char *name = args[0];
	struct cfg *cfg = load(cfgfile);
	if (!cfg)
		return CLI_EX_TEMPFAIL;
	int rc = CLI_EX_TEMPFAIL;
	store_msg *m = store_msg_new();
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, stdin)) > 0)
		store_msg_append(m, buf, n);
	if (ferror(stdin)) {
		fprintf(stderr, "onebox: reading the message: %s\n", strerror(errno));
		goto out;
	}
	store_msg_finish(m);
	if (drop_privileges(cfg) != 0)
		goto out;
	store *s = open_store(cfg, false, NULL);
	if (!s)
		goto out;
	store_req *r = store_req_new();
	store_req_deliver(r, name, NULL, m, 0, 0);
	int st = store_req_run(s, r);
	store_close(s);
	switch (st) {
	case STORE_OK:
		rc = CLI_EX_OK;
		break;
	case STORE_NOTFOUND:
	case STORE_INVALID:
		fprintf(stderr, "onebox: no such user: %s\n", name);
		rc = CLI_EX_NOUSER;
		break;
	case STORE_OVERQUOTA:
		if (cfg->quota_over == CFG_OVER_QUOTA_TEMPORARY) {
			fprintf(stderr, "4.2.2 onebox: %s: mailbox over quota, try again later\n",
			        name);
			rc = CLI_EX_TEMPFAIL;
		} else {
			fprintf(stderr, "5.2.2 onebox: %s: mailbox over quota\n", name);
			rc = DELIVER_EX_REFUSED;
		}
		break;
	case STORE_NOSPACE:
		fprintf(stderr, "4.3.1 onebox: %s: %s, try again later\n", name,
		        store_strerror(st));
		rc = CLI_EX_TEMPFAIL;
		break;
	default:
		fprintf(stderr, "onebox: %s: %s\n", name, store_strerror(st));
		rc = CLI_EX_TEMPFAIL;
		break;
	}
out:
	store_msg_unref(m);
	cfg_free(cfg);
	return rc;
}

int cli_run(const char *cmd, const char **args, int nargs, const char *cfgfile)
{
	if (!strcmp(cmd, "check"))
		return nargs == 0 ? cmd_check(cfgfile) : CLI_EX_USAGE;
	if (!strcmp(cmd, "user"))
		return cmd_user(args, nargs, cfgfile);
	if (!strcmp(cmd, "deliver"))
		return cmd_deliver(args, nargs, cfgfile);
	return CLI_EX_USAGE;
}
