/*
 * main.c - the `onebox` command: argument parsing and `onebox serve`.
 *
 * serve loads the config, binds the listeners (as root if need be), drops
 * privileges, opens the store with its writer thread, and runs the libuv
 * loop until SIGTERM/SIGINT.  The other subcommands (check, user, deliver)
 * live in cli.c and share the config loading and privilege drop here.
 */
#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/cli.h"
#include "server/server.h"

#define ONEBOX_VERSION "0.1.0"

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: onebox COMMAND [ARGS] [-c FILE]\n"
	        "\n"
	        "  serve                  run the daemon in the foreground\n"
	        "  check                  validate the config (exit 0 if valid)\n"
	        "  user add NAME          add a user; password on the first line of stdin\n"
	        "  user passwd NAME       set a user's password from stdin\n"
	        "  user del NAME          delete a user and all their mail\n"
	        "  user list              list users\n"
	        "  user quota NAME [--bytes SIZE] [--messages N]\n"
	        "                         show, or set (0: no limit, default: the\n"
	        "                         config's quota group), a user's quota\n"
	        "  deliver NAME           store the message on stdin in NAME's INBOX\n"
	        "                         (exit 0 stored, 67 no such user, 77 over quota,\n"
	        "                         75 try later)\n"
	        "  version                print the version\n"
	        "\n"
	        "  -c FILE                config file (default %s)\n",
	        CLI_DEFAULT_CONFIG);
}

/*
 * Become cfg->user when running as root.  Called after every privileged
 * step (binding low ports, reading root-only keys) and before the store is
 * opened, so that store files are always owned by the daemon's user and the
 * CLI run by root creates nothing the daemon cannot open.
 */
int drop_privileges(const struct cfg *cfg)
{
	if (geteuid() != 0 || !cfg->user)
		return 0;
	struct passwd *pw = getpwnam(cfg->user);
	if (!pw) {
		fprintf(stderr, "%s: user \"%s\" does not exist\n", cfg->file, cfg->user);
		return -1;
	}
	/* The data folder must belong to the user we become. */
	if (mkdir(cfg->storage_path, 0750) == 0 || errno == EEXIST) {
		struct stat st;
		if (stat(cfg->storage_path, &st) == 0 && st.st_uid != pw->pw_uid &&
		    chown(cfg->storage_path, pw->pw_uid, pw->pw_gid) != 0) {
			fprintf(stderr, "onebox: chown %s: %s\n", cfg->storage_path,
			        strerror(errno));
			return -1;
		}
	}
	if (setgroups(1, &pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
	    setuid(pw->pw_uid) != 0) {
		fprintf(stderr, "onebox: cannot become %s: %s\n", cfg->user, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) { /* paranoia: the drop must be irreversible */
		fprintf(stderr, "onebox: privilege drop did not stick\n");
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------ serve */

struct serve_state {
	struct server srv;
	uv_signal_t sig_term, sig_int, sig_hup;
	uv_timer_t stop_timer;   /* waits for the last connection to go */
};

static void on_close_noop(uv_handle_t *h)
{
	(void)h;
}

/*
 * Graceful stop: accept nothing new and close every connection (queued
 * output is flushed first; conn.c bounds how long that may take).  The
 * store is closed only once the last connection is gone, so that sessions
 * never outlive the store they hold watches and requests on; closing it
 * lets the writer commit what it holds (a client whose commit was in
 * flight may miss its answer and retry; nothing acknowledged is lost).
 */
static void on_stop_timer(uv_timer_t *h)
{
	struct serve_state *st = h->data;
	struct server *srv = &st->srv;
	if (srv->conns)
		return;
	uv_timer_stop(h);
	uv_close((uv_handle_t *)h, on_close_noop);
	store_close(srv->store);
	srv->store = NULL;
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
	struct serve_state *st = h->data;
	struct server *srv = &st->srv;
	if (srv->stopping)
		return;
	srv->stopping = true;
	log_msg(LOGL_INFO, "signal %d: stopping", signum);
	listeners_close(srv);
	conn_close_all(srv);
	auth_stop();
	uv_close((uv_handle_t *)&st->sig_term, on_close_noop);
	uv_close((uv_handle_t *)&st->sig_int, on_close_noop);
	uv_close((uv_handle_t *)&st->sig_hup, on_close_noop);
	uv_timer_init(srv->loop, &st->stop_timer);
	st->stop_timer.data = st;
	uv_timer_start(&st->stop_timer, on_stop_timer, 0, 20);
}

static void on_hup(uv_signal_t *h, int signum)
{
	struct serve_state *st = h->data;
	char err[512];
	(void)signum;
	if (!st->srv.tls) {
		log_msg(LOGL_INFO, "SIGHUP: no TLS configured, nothing to reload");
		return;
	}
	if (tls_creds_reload(st->srv.tls, err, sizeof err) != 0)
		log_msg(LOGL_ERR, "SIGHUP: keeping the old certificate: %s", err);
	else
		log_msg(LOGL_INFO, "SIGHUP: certificate and key reloaded");
}

/*
 * Keep freed large blocks in the process.  glibc hands a block past its
 * mmap threshold (128 KiB, raised as such blocks are freed) straight back
 * to the kernel when it is freed, and gives back the top of a heap past
 * the trim threshold.  The daemon allocates such blocks for every large
 * message (its buffer) and every commit (LMDB copies each new body into
 * pages it mallocs for the transaction), so each came as fresh memory: a
 * page fault and a zeroed page per 4 KiB, and on a virtual machine whose
 * host takes back freed memory, a trip to the host as well.  With 50 LMTP
 * senders of 256 KiB, 40% of the writer's samples were there (docs/
 * benchmarks.md).  A fixed threshold of 32 MiB (the most the dynamic one
 * would reach) and a trim threshold of 64 MiB keep those blocks for
 * reuse; the cost is at most that much free memory held per arena.
 */
static void malloc_keep_large_blocks(void)
{
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

static int cmd_serve(const char *cfgfile)
{
	malloc_keep_large_blocks();
	struct cfg *cfg = cfg_load(cfgfile, stderr);
	if (!cfg)
		return 1;
	int level = log_level_parse(cfg->log_level);
	log_set_level(level < 0 ? LOGL_INFO : level);
	signal(SIGPIPE, SIG_IGN);

	struct serve_state *st = calloc(1, sizeof *st);
	if (!st) {
		cfg_free(cfg);
		return 1;
	}
	struct server *srv = &st->srv;
	srv->loop = uv_default_loop();
	srv->cfg = cfg;
	srv->next_session_id = 1;
	int rc = 1;
	char err[512];

	if (cfg->tls_certificate) {
		srv->tls = tls_creds_load(cfg->tls_certificate, cfg->tls_key,
		                          cfg->tls_priorities, err, sizeof err);
		if (!srv->tls) {
			log_msg(LOGL_ERR, "%s", err);
			goto out;
		}
	}
	if (listeners_bind(srv) != 0)
		goto out;
	if (drop_privileges(cfg) != 0)
		goto out_listeners;

	struct store_options so = {
		.map_size = cfg->storage_map_size,
		.max_map_size = cfg->storage_max_size,
		.expunge_retention = cfg->storage_expunge_retention,
		.default_quota_bytes = cfg->quota_storage,
		.default_quota_messages = cfg->quota_messages,
	};
	if (store_open(&srv->store, cfg->storage_path, &so, srv->loop, err, sizeof err) != 0) {
		log_msg(LOGL_ERR, "%s", err);
		goto out_listeners;
	}

	uv_signal_init(srv->loop, &st->sig_term);
	uv_signal_init(srv->loop, &st->sig_int);
	uv_signal_init(srv->loop, &st->sig_hup);
	st->sig_term.data = st->sig_int.data = st->sig_hup.data = st;
	uv_signal_start(&st->sig_term, on_stop_signal, SIGTERM);
	uv_signal_start(&st->sig_int, on_stop_signal, SIGINT);
	uv_signal_start(&st->sig_hup, on_hup, SIGHUP);

	if (listeners_start(srv) != 0) {
		raise(SIGTERM);
	} else {
		log_msg(LOGL_INFO, "onebox %s ready (store %s)", ONEBOX_VERSION,
		        cfg->storage_path);
		rc = 0;
	}
	uv_run(srv->loop, UV_RUN_DEFAULT);
	log_msg(LOGL_INFO, "stopped");
	goto out;

out_listeners:
	listeners_close(srv);
	uv_run(srv->loop, UV_RUN_DEFAULT);
out:
	if (srv->tls)
		tls_creds_free(srv->tls);
	uv_loop_close(srv->loop);
	cfg_free(cfg);
	free(st);
	return rc;
}

/* ------------------------------------------------------------- main */

int main(int argc, char **argv)
{
	const char *cfgfile = CLI_DEFAULT_CONFIG;
	const char *args[8];
	int nargs = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) {
			if (++i >= argc) {
				usage(stderr);
				return CLI_EX_USAGE;
			}
			cfgfile = argv[i];
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (nargs < (int)(sizeof args / sizeof args[0])) {
			args[nargs++] = argv[i];
		} else {
			usage(stderr);
			return CLI_EX_USAGE;
		}
	}
	if (nargs == 0) {
		usage(stderr);
		return CLI_EX_USAGE;
	}
	const char *cmd = args[0];
	if (!strcmp(cmd, "serve") && nargs == 1)
		return cmd_serve(cfgfile);
	if (!strcmp(cmd, "version") && nargs == 1) {
		printf("onebox %s\n", ONEBOX_VERSION);
		return 0;
	}
	int rc = cli_run(cmd, args + 1, nargs - 1, cfgfile);
	if (rc == CLI_EX_USAGE)
		usage(stderr);
	return rc;
}
