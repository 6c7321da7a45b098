/*
 * cli.h - the administrative subcommands: check, user, deliver.
 *
 * They open the store directly (no daemon needed; LMDB lets them share it
 * with a running daemon) and apply writes synchronously and durably.
 */
#ifndef ONEBOX_CLI_H
#define ONEBOX_CLI_H

#include "server/cfg.h"

#define CLI_DEFAULT_CONFIG "/etc/onebox/onebox.conf"

/* sysexits(3) codes, as an MTA expects them from a delivery agent. */
enum {
	CLI_EX_OK = 0,
	CLI_EX_ERROR = 1,
	CLI_EX_USAGE = 64,
	CLI_EX_NOUSER = 67,
	CLI_EX_TEMPFAIL = 75,
};

/* Run subcommand CMD with its NARGS arguments; returns the exit code. */
int cli_run(const char *cmd, const char **args, int nargs, const char *cfgfile);

/* Become cfg->user if running as root (main.c). */
int drop_privileges(const struct cfg *cfg);

#endif
