/*
 * auth.c - passwords: hashing for the CLI, and the daemon's password check.
 *
 * Hashes are crypt(3) strings from libcrypt: yescrypt where available,
 * else SHA-512-crypt.  Checking a password is slow on purpose, so the
 * daemon does it on the libuv thread pool and answers on the loop thread.
 * An unknown user is checked against a dummy hash so that "no such user"
 * and "wrong password" cost the same time.
 */
#include <crypt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"

char *auth_hash_password(const char *password)
{
	static const char *const prefixes[] = { "$y$", "$6$" };
	for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
		char *salt = crypt_gensalt_ra(prefixes[i], 0, NULL, 0);
		if (!salt)
			continue;
		void *data = NULL;
		int size = 0;
		char *h = crypt_ra(password, salt, &data, &size);
		char *out = (h && h[0] != '*') ? strdup(h) : NULL;
		if (data) {
			explicit_bzero(data, (size_t)size);
			free(data);
		}
		free(salt);
		if (out)
			return out;
	}
	return NULL;
}

/* Compare two NUL-terminated strings in time independent of where they
 * first differ. */
static bool equal_ct(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = la != lb;
	size_t n = la < lb ? la : lb;
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)(a[i] ^ b[i]);
	return diff == 0;
}

static char *dummy_hash;
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void make_dummy_hash(void)
{
	dummy_hash = auth_hash_password("onebox dummy password");
}

bool auth_check_password(const char *password, const char *hash)
{
	bool usable = hash && hash[0] == '$';
	if (!usable) {
		pthread_once(&dummy_once, make_dummy_hash);
		hash = dummy_hash ? dummy_hash : "$6$onebox$";
	}
	struct crypt_data *cd = calloc(1, sizeof *cd);
	if (!cd)
		return false;
	const char *h = crypt_r(password, hash, cd);
	bool ok = usable && h && h[0] != '*' && equal_ct(h, hash);
	explicit_bzero(cd, sizeof *cd);
	free(cd);
	return ok;
}

/* ---------------------------------------------- the daemon's check */

struct auth_job {
	uv_work_t work;
	conn *c;
	conn_auth_cb cb;
	char *user;       /* canonical name from the store */
	uint32_t user_id;
	char *password;
	char *hash;       /* NULL: no such user */
	bool ok;
};

static void auth_work(uv_work_t *w)
{
	struct auth_job *j = w->data;
	j->ok = auth_check_password(j->password, j->hash);
}

static void auth_done(uv_work_t *w, int status)
{
	struct auth_job *j = w->data;
	bool ok = status == 0 && j->ok;
	if (!conn_closed(j->c)) {
		if (ok)
			conn_log(j->c, LOGL_INFO, "login as %s", j->user);
		else
			conn_log(j->c, LOGL_INFO, "authentication failed");
		j->cb(j->c, conn_session(j->c), ok, ok ? j->user : NULL, ok ? j->user_id : 0);
	}
	conn_release(j->c);
	explicit_bzero(j->password, strlen(j->password));
	free(j->password);
	free(j->hash);
	free(j->user);
	free(j);
}

void conn_auth_password(conn *c, const char *user, const char *password, conn_auth_cb cb)
{
	struct auth_job *j = calloc(1, sizeof *j);
	if (!j) {
		cb(c, conn_session(c), false, NULL, 0);
		return;
	}
	j->c = c;
	j->cb = cb;
	j->password = strdup(password);
	j->user = strdup(user);
	store_txn *t = store_read_begin(conn_store(c));
	if (t) {
		struct store_user u;
		if (store_user_get(t, user, &u) == STORE_OK) {
			j->hash = strdup(u.pass_hash);
			j->user_id = u.id;
			free(j->user);
			j->user = strdup(u.name);
		}
		store_read_end(t);
	}
	if (!j->password || !j->user) {
		free(j->password);
		free(j->user);
		free(j->hash);
		free(j);
		cb(c, conn_session(c), false, NULL, 0);
		return;
	}
	conn_hold(c);
	j->work.data = j;
	if (uv_queue_work(conn_server(c)->loop, &j->work, auth_work, auth_done) != 0)
		auth_done(&j->work, -1);
}
