/*
 * listener.c - the listening sockets: one per cfg->listen entry.
 *
 * listeners_bind() creates and binds the sockets as plain descriptors while
 * the daemon may still be root (low ports, socket directories);
 * listeners_start() wraps them in libuv handles and accepts, handing each
 * client to conn_accept() with its protocol's ops.  Which front-end serves
 * which configured protocol is the table `bindings` below.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "server/server.h"

#define LISTEN_BACKLOG 511

/* Protocol -> front-end. */
static const struct binding {
	enum cfg_proto proto;
	const struct proto_ops *ops;
	bool implicit_tls;
} bindings[] = {
	{ CFG_POP3, &pop3_ops, false },
	{ CFG_POP3S, &pop3_ops, true },
	{ CFG_LMTP, &lmtp_ops, false },
	{ CFG_IMAP, &imap_ops, false },
	{ CFG_IMAPS, &imap_ops, true },
};

union stream_handle {
	uv_handle_t handle;
	uv_stream_t stream;
	uv_tcp_t tcp;
	uv_pipe_t pipe;
};

struct listener {
	union stream_handle h;  /* valid once started */
	struct server *srv;
	struct listener *all;   /* the array, freed when the last handle closes */
	unsigned open_handles;  /* in all[0]: handles still closing */
	const struct proto_ops *ops;
	bool implicit_tls;
	int fd;                 /* -1 once owned by the handle or closed */
	bool started;
	char *path;             /* unix socket file we created, unlinked at close */
	char name[160];         /* "pop3 on 127.0.0.1:1110", for logs */
};

static const struct binding *binding_for(enum cfg_proto p)
{
	for (size_t i = 0; i < sizeof bindings / sizeof bindings[0]; i++)
		if (bindings[i].proto == p)
			return &bindings[i];
	return NULL;
}

static int bind_tcp(struct listener *l, const struct cfg_listen *cl)
{
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
	} addr;
	socklen_t alen;
	int family;
	if (uv_ip4_addr(cl->address, cl->port, &addr.in4) == 0) {
		family = AF_INET;
		alen = sizeof addr.in4;
		snprintf(l->name, sizeof l->name, "%s on %s:%d", l->ops->name, cl->address, cl->port);
	} else if (uv_ip6_addr(cl->address, cl->port, &addr.in6) == 0) {
		family = AF_INET6;
		alen = sizeof addr.in6;
		snprintf(l->name, sizeof l->name, "%s on [%s]:%d", l->ops->name, cl->address,
		         cl->port);
	} else {
		log_msg(LOGL_ERR, "%s:%d: listen address \"%s\" is not an IP address",
		        l->srv->cfg->file, cl->line, cl->address);
		return -1;
	}
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		log_msg(LOGL_ERR, "%s: socket: %s", l->name, strerror(errno));
		return -1;
	}
	int on = 1;
	/* Restart without waiting out TIME_WAIT of the last run's clients. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
	/* A v6 listener takes v6 only, so "::" and "0.0.0.0" can coexist. */
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
	if (bind(fd, &addr.sa, alen) != 0) {
		log_msg(LOGL_ERR, "%s:%d: cannot listen (%s): %s", l->srv->cfg->file, cl->line,
		        l->name, strerror(errno));
		close(fd);
		return -1;
	}
	l->fd = fd;
	return 0;
}

/* A socket file left by a previous run is removed; one a running server
 * still answers on, or a file that is not a socket, is left alone. */
static int remove_stale_socket(const struct listener *l, const char *path, int line)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return 0;
	const char *file = l->srv->cfg->file;
	if (!S_ISSOCK(st.st_mode)) {
		log_msg(LOGL_ERR, "%s:%d: %s exists and is not a socket", file, line, path);
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		memcpy(sun.sun_path, path, strlen(path) + 1);
		int live = connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
		close(fd);
		if (live) {
			log_msg(LOGL_ERR, "%s:%d: %s is in use by a running server", file, line, path);
			return -1;
		}
	}
	if (unlink(path) != 0 && errno != ENOENT) {
		log_msg(LOGL_ERR, "%s:%d: cannot remove stale socket %s: %s", file, line, path,
		        strerror(errno));
		return -1;
	}
	return 0;
}

static int bind_unix(struct listener *l, const struct cfg_listen *cl)
{
	const char *file = l->srv->cfg->file;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t plen = strlen(cl->path);
	snprintf(l->name, sizeof l->name, "%s on %s", l->ops->name, cl->path);
	if (plen == 0 || plen >= sizeof sun.sun_path) {
		log_msg(LOGL_ERR, "%s:%d: socket path too long (at most %zu bytes): %s", file,
		        cl->line, sizeof sun.sun_path - 1, cl->path);
		return -1;
	}
	memcpy(sun.sun_path, cl->path, plen + 1);
	if (remove_stale_socket(l, cl->path, cl->line) != 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		log_msg(LOGL_ERR, "%s: socket: %s", l->name, strerror(errno));
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		log_msg(LOGL_ERR, "%s:%d: cannot listen (%s): %s", file, cl->line, l->name,
		        strerror(errno));
		close(fd);
		return -1;
	}
	l->path = strdup(cl->path);
	/* Any local MTA user may deliver: LMTP authenticates nobody anyway,
	 * and the MTA's user is not ours. */
	if (chmod(cl->path, 0666) != 0)
		log_msg(LOGL_WARN, "%s: chmod 0666: %s", l->name, strerror(errno));
	l->fd = fd;
	return 0;
}

int listeners_bind(struct server *srv)
{
	const struct cfg *cfg = srv->cfg;
	srv->listeners = NULL;
	srv->nlisteners = 0;
	struct listener *all = calloc(cfg->nlisten ? cfg->nlisten : 1, sizeof *all);
	if (!all) {
		log_msg(LOGL_ERR, "out of memory");
		return -1;
	}
	srv->listeners = all;
	size_t skipped = 0;
	for (size_t i = 0; i < cfg->nlisten; i++) {
		const struct cfg_listen *cl = &cfg->listen[i];
		const struct binding *b = binding_for(cl->protocol);
		if (!b) {
			skipped++;
			continue;
		}
		struct listener *l = &all[srv->nlisteners];
		l->srv = srv;
		l->all = all;
		l->ops = b->ops;
		l->implicit_tls = b->implicit_tls;
		l->fd = -1;
		if (b->implicit_tls && !srv->tls) {
			log_msg(LOGL_ERR, "%s:%d: %s needs tls.certificate and tls.key", cfg->file,
			        cl->line, cfg_proto_name(cl->protocol));
			goto fail;
		}
		srv->nlisteners++;
		if ((cl->path ? bind_unix(l, cl) : bind_tcp(l, cl)) != 0)
			goto fail;
	}
	if (skipped)
		log_msg(LOGL_WARN, "%zu listener%s of a protocol this build does not serve "
		        "not started", skipped, skipped == 1 ? "" : "s");
	if (srv->nlisteners == 0) {
		log_msg(LOGL_ERR, "%s: no listener this build can serve", cfg->file);
		goto fail;
	}
	return 0;
fail:
	listeners_close(srv);
	return -1;
}

static void free_handle(uv_handle_t *h)
{
	free(h);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct listener *l = server->data;
	if (status < 0) {
		/* Typically EMFILE: libuv sheds the connection; say so, but
		 * not thousands of times a second. */
		static uint64_t last_warned;
		uint64_t now = uv_now(l->srv->loop);
		if (now - last_warned >= 1000 || last_warned == 0) {
			last_warned = now;
			log_msg(LOGL_WARN, "%s: accept: %s", l->name, uv_strerror(status));
		}
		return;
	}
	union stream_handle *h = malloc(sizeof *h);
	if (!h) {
		log_msg(LOGL_ERR, "%s: out of memory accepting a connection", l->name);
		return;
	}
	if (server->type == UV_TCP)
		uv_tcp_init(l->srv->loop, &h->tcp);
	else
		uv_pipe_init(l->srv->loop, &h->pipe, 0);
	int r = uv_accept(server, &h->stream);
	if (r < 0) {
		log_msg(LOGL_DEBUG, "%s: accept: %s", l->name, uv_strerror(r));
		uv_close(&h->handle, free_handle);
		return;
	}
	conn_accept(l->srv, &h->stream, l->ops, l->implicit_tls); /* owns H now */
}

int listeners_start(struct server *srv)
{
	for (size_t i = 0; i < srv->nlisteners; i++) {
		struct listener *l = &srv->listeners[i];
		if (l->started || l->fd < 0)
			continue;
		int r;
		if (l->path) {
			uv_pipe_init(srv->loop, &l->h.pipe, 0);
			r = uv_pipe_open(&l->h.pipe, l->fd);
		} else {
			uv_tcp_init(srv->loop, &l->h.tcp);
			r = uv_tcp_open(&l->h.tcp, l->fd);
		}
		l->started = true; /* the handle exists and must be closed */
		l->all[0].open_handles++;
		l->h.handle.data = l;
		if (r == 0) {
			l->fd = -1; /* the handle owns it */
			r = uv_listen(&l->h.stream, LISTEN_BACKLOG, on_connection);
		}
		if (r < 0) {
			log_msg(LOGL_ERR, "%s: listen: %s", l->name, uv_strerror(r));
			return -1;
		}
		log_msg(LOGL_INFO, "listening: %s%s", l->name,
		        l->implicit_tls ? " (TLS)" : "");
	}
	return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
	struct listener *l = h->data;
	struct listener *all = l->all;
	if (--all[0].open_handles == 0)
		free(all);
}

void listeners_close(struct server *srv)
{
	struct listener *all = srv->listeners;
	if (!all)
		return;
	size_t n = srv->nlisteners;
	srv->listeners = NULL;
	srv->nlisteners = 0;
	for (size_t i = 0; i < n; i++) {
		struct listener *l = &all[i];
		if (l->fd >= 0) {
			close(l->fd);
			l->fd = -1;
		}
		/* After the privilege drop this may fail (root-owned directory):
		 * the next start removes the stale file anyway. */
		if (l->path && unlink(l->path) != 0 && errno != ENOENT)
			log_msg(LOGL_DEBUG, "%s: unlink: %s", l->name, strerror(errno));
		free(l->path);
		l->path = NULL;
	}
	/* The array lives until the last handle's close callback. */
	bool any = all[0].open_handles > 0;
	for (size_t i = 0; i < n; i++)
		if (all[i].started)
			uv_close(&all[i].h.handle, on_listener_closed);
	if (!any)
		free(all);
}
