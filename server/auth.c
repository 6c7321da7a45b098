/*
 * auth.c - passwords: hashing for the CLI, and the daemon's credential
 * checks with their verification cache and guessing limits.
 *
 * Hashes are crypt(3) strings from libcrypt: yescrypt where available,
 * else SHA-512-crypt.  Checking a password is slow on purpose, so the
 * daemon does it on the libuv thread pool and answers on the loop thread.
 * An unknown user is checked against a dummy hash so that "no such user"
 * and "wrong password" cost the same time.
 *
 * Every outcome (password or SCRAM) ends in auth_finish(): a success is
 * answered at once; a failure is counted per connection, per client
 * address and per user name, and answered after a growing delay (a
 * uv_timer, never a sleep).  docs/security.md explains the numbers.
 */
#include <arpa/inet.h>
#include <crypt.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/sasl.h"
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

static bool equal32(const unsigned char *a, const unsigned char *b)
{
	unsigned char diff = 0;
	for (int i = 0; i < 32; i++)
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

/* ------------------------------------------------- bounded LRU tables */

/*
 * A fixed-capacity table keyed by a 32-byte HMAC (with the process key, so
 * clients cannot aim at a bucket): chained hash plus a recency list; when
 * full, the least recently used entry goes.  Used for the verification
 * cache and the per-address and per-user failure counters.
 */
struct lru_ent {
	unsigned char key[32];
	struct lru_ent *hnext, *older, *newer;
	uint64_t t;                  /* cache: expiry; counters: last failure (ms) */
	uint32_t user_id;            /* cache */
	unsigned char pw[32];        /* cache: HMAC of user NUL password */
	unsigned char fp[32];        /* cache: HMAC of the stored hash string */
	unsigned fails;              /* counters */
	bool logged;                 /* counters: "being delayed" was logged */
};

struct lru {
	struct lru_ent **b;
	size_t nb, n, cap;
	struct lru_ent *newest, *oldest;
};

static bool lru_init(struct lru *t, size_t cap)
{
	size_t nb = 16;
	while (nb < cap && nb < ((size_t)1 << 24))
		nb <<= 1;
	t->b = calloc(nb, sizeof *t->b);
	t->nb = t->b ? nb : 0;
	t->cap = cap;
	return t->b != NULL;
}

static size_t lru_bucket(const struct lru *t, const unsigned char key[32])
{
	uint64_t h;
	memcpy(&h, key, sizeof h);
	return (size_t)(h & (t->nb - 1));
}

static void lru_unlink(struct lru *t, struct lru_ent *e)
{
	if (e->older)
		e->older->newer = e->newer;
	else
		t->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		t->newest = e->older;
	e->older = e->newer = NULL;
}

static void lru_push(struct lru *t, struct lru_ent *e)
{
	e->older = t->newest;
	e->newer = NULL;
	if (t->newest)
		t->newest->newer = e;
	else
		t->oldest = e;
	t->newest = e;
}

static void lru_del(struct lru *t, struct lru_ent *e)
{
	struct lru_ent **pe = &t->b[lru_bucket(t, e->key)];
	while (*pe && *pe != e)
		pe = &(*pe)->hnext;
	if (*pe)
		*pe = e->hnext;
	lru_unlink(t, e);
	t->n--;
	explicit_bzero(e, sizeof *e);
	free(e);
}

static struct lru_ent *lru_find(struct lru *t, const unsigned char key[32])
{
	if (!t->nb)
		return NULL;
	for (struct lru_ent *e = t->b[lru_bucket(t, key)]; e; e = e->hnext) {
		if (memcmp(e->key, key, 32) == 0) {
			lru_unlink(t, e);
			lru_push(t, e);
			return e;
		}
	}
	return NULL;
}

/* A new zeroed entry for KEY (which must not be in T); NULL if out of memory. */
static struct lru_ent *lru_add(struct lru *t, const unsigned char key[32])
{
	if (!t->nb)
		return NULL;
	if (t->n >= t->cap && t->oldest)
		lru_del(t, t->oldest);
	struct lru_ent *e = calloc(1, sizeof *e);
	if (!e)
		return NULL;
	memcpy(e->key, key, 32);
	size_t h = lru_bucket(t, key);
	e->hnext = t->b[h];
	t->b[h] = e;
	lru_push(t, e);
	t->n++;
	return e;
}

/* ------------------------------------------------------ process state */

struct auth_job;

static struct {
	bool ready;
	bool stopping;
	unsigned char key[32];         /* random per process: keys every HMAC here */
	struct lru cache, by_addr, by_user;
	struct auth_job *delayed;      /* jobs whose answer waits on a timer */
	/* Hashes running on the thread pool, by the first octet of their
	 * keyed password MAC: a burst of logins of many accounts (a restart)
	 * must not scan one long list per login. */
	struct auth_job *flights[256];
} A;

static const struct cfg_auth *auth_cfg(conn *c)
{
	return &conn_server(c)->cfg->auth;
}

static void auth_init(conn *c)
{
	if (A.ready)
		return;
	const struct cfg_auth *ac = auth_cfg(c);
	if (gnutls_rnd(GNUTLS_RND_KEY, A.key, sizeof A.key) < 0)
		log_msg(LOGL_ERR, "auth: no random key; the verification cache is off");
	else
		lru_init(&A.cache, ac->cache_size);
	lru_init(&A.by_addr, ac->fail_table_size);
	lru_init(&A.by_user, ac->fail_table_size);
	A.ready = true;
}

/* HMAC-SHA-256 with the process key over TAG and up to two parts
 * (P2 is separated from P1 by a NUL). */
static void auth_mac(const char *tag, const void *p1, size_t l1, const void *p2, size_t l2,
                     unsigned char out[32])
{
	gnutls_hmac_hd_t h;
	if (gnutls_hmac_init(&h, GNUTLS_MAC_SHA256, A.key, sizeof A.key) < 0) {
		memset(out, 0, 32);
		return;
	}
	gnutls_hmac(h, tag, strlen(tag) + 1);
	gnutls_hmac(h, p1, l1);
	if (p2) {
		gnutls_hmac(h, "", 1);
		gnutls_hmac(h, p2, l2);
	}
	gnutls_hmac_deinit(h, out);
}

/* A user name as typed, fit for a log line: control bytes become '?'. */
static void log_name(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	for (; *in && o + 1 < cap; in++)
		out[o++] = (unsigned char)*in < 0x20 || *in == 0x7f ? '?' : *in;
	out[o] = '\0';
}

/* ------------------------------------------------------ the guessing */

/* BASE doubled for each failure after the first, capped at MAX. */
static uint64_t doubling(unsigned base, unsigned max, unsigned n)
{
	if (n == 0)
		return 0;
	uint64_t d = (uint64_t)base << (n - 1 > 20 ? 20 : n - 1);
	return d > max ? max : d;
}

/* Count a failure for KEY in T; the failures within the window, this one
 * included.  *START is set when this failure crosses the threshold. */
static unsigned count_failure(struct lru *t, const unsigned char key[32], uint64_t now,
                              uint64_t window, unsigned threshold, bool *start)
{
	struct lru_ent *e = lru_find(t, key);
	if (!e && !(e = lru_add(t, key)))
		return 0;
	if (now - e->t > window) {
		e->fails = 0;
		e->logged = false;
	}
	e->fails++;
	e->t = now;
	*start = e->fails > threshold && !e->logged;
	if (*start)
		e->logged = true;
	return e->fails;
}

/*
 * A failure: the delay before its answer, in ms.  Per connection every
 * failure counts (1st: fail_delay, then doubling); per address and per
 * user name the delay starts after fail_threshold failures within
 * fail_window.  The largest applies, capped at fail_delay_max.
 */
static uint64_t guess_failure(conn *c, const char *typed)
{
	const struct cfg_auth *ac = auth_cfg(c);
	uint64_t now = uv_now(conn_server(c)->loop), window = (uint64_t)ac->fail_window * 1000;
	unsigned th = ac->fail_threshold;
	unsigned char key[32];
	unsigned nc, na = 0, nu;
	bool start_a = false, start_u = false;
	char name[64], addr[INET6_ADDRSTRLEN] = "unix";

	nc = ++*conn_auth_failures(c);
	const unsigned char *ip = conn_addr(c);
	if (ip) {
		static const unsigned char v4map[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
		if (memcmp(ip, v4map, 12) == 0)
			inet_ntop(AF_INET, ip + 12, addr, sizeof addr);
		else
			inet_ntop(AF_INET6, ip, addr, sizeof addr);
		auth_mac("addr", ip, 16, NULL, 0, key);
		na = count_failure(&A.by_addr, key, now, window, th, &start_a);
	}
	auth_mac("user", typed, strlen(typed), NULL, 0, key);
	nu = count_failure(&A.by_user, key, now, window, th, &start_u);
	log_name(typed, name, sizeof name);
	if (start_a)
		log_msg(LOGL_WARN, "auth: address %s is being delayed: %u failed logins within %u s",
		        addr, na, ac->fail_window);
	if (start_u)
		log_msg(LOGL_WARN, "auth: user name \"%s\" is being delayed: %u failed logins within %u s",
		        name, nu, ac->fail_window);

	uint64_t d = doubling(ac->fail_delay, ac->fail_delay_max, nc);
	uint64_t da = na > th ? doubling(ac->fail_delay, ac->fail_delay_max, na - th) : 0;
	uint64_t du = nu > th ? doubling(ac->fail_delay, ac->fail_delay_max, nu - th) : 0;
	if (da > d)
		d = da;
	if (du > d)
		d = du;
	if (A.stopping)
		d = 0;
	conn_log(c, LOGL_INFO,
	         "authentication failed for \"%s\"; answer delayed %llu ms "
	         "(failures: connection %u, address %s %u, user %u)",
	         name, (unsigned long long)d, nc, addr, na, nu);
	return d;
}

/* ------------------------------------------------- the daemon's checks */

struct auth_job {
	uv_work_t work;
	uv_timer_t timer;
	struct auth_job *next, **pprev; /* A.delayed while the timer runs */
	conn *c;
	conn_auth_cb cb;        /* the session form, or */
	conn_auth_arg_cb acb;   /* the ARG form */
	void *arg;
	char typed[256];        /* the name as given (failure counters) */
	char *user;             /* canonical name from the store */
	uint32_t user_id;
	char *password;
	char *hash;             /* NULL: no such user */
	unsigned char pw[32];   /* cache: HMAC of user NUL password */
	bool ok;
	/* Single flight: a job whose hash runs is in A.flights; identical
	 * checks that arrive meanwhile wait on its followers list. */
	struct auth_job *fnext, **fpprev;
	struct auth_job *followers, *follow_next;
};

static void job_free(uv_handle_t *h)
{
	struct auth_job *j = h->data;
	if (j->password) {
		explicit_bzero(j->password, strlen(j->password));
		free(j->password);
	}
	free(j->hash);
	free(j->user);
	explicit_bzero(j, sizeof *j);
	free(j);
}

/* The answer: to the front-end (if it is still there), then clean up. */
static void job_deliver(uv_timer_t *t)
{
	struct auth_job *j = t->data;
	if (j->pprev) {
		*j->pprev = j->next;
		if (j->next)
			j->next->pprev = j->pprev;
		j->pprev = NULL;
	}
	if (!conn_closed(j->c)) {
		const char *user = j->ok ? j->user : NULL;
		uint32_t id = j->ok ? j->user_id : 0;
		if (j->cb)
			j->cb(j->c, conn_session(j->c), j->ok, user, id);
		else
			j->acb(j->c, j->arg, j->ok, user, id);
	}
	conn_release(j->c);
	uv_close((uv_handle_t *)t, job_free);
}

/* The outcome is known: count it, and answer after the delay it earns. */
static void auth_finish(struct auth_job *j, bool ok)
{
	uint64_t delay = 0;
	j->ok = ok && j->user;
	if (conn_closed(j->c)) {
		/* nothing to count: the client is gone */
	} else if (j->ok) {
		conn_log(j->c, LOGL_INFO, "login as %s", j->user);
	} else {
		delay = guess_failure(j->c, j->typed);
	}
	uv_timer_init(conn_server(j->c)->loop, &j->timer);
	j->timer.data = j;
	j->next = A.delayed;
	if (j->next)
		j->next->pprev = &j->next;
	j->pprev = &A.delayed;
	A.delayed = j;
	uv_timer_start(&j->timer, job_deliver, delay, 0);
}

static struct auth_job *job_new(conn *c, const char *user, conn_auth_cb cb,
                                conn_auth_arg_cb acb, void *arg)
{
	auth_init(c);
	struct auth_job *j = calloc(1, sizeof *j);
	if (!j)
		return NULL;
	j->c = c;
	j->cb = cb;
	j->acb = acb;
	j->arg = arg;
	snprintf(j->typed, sizeof j->typed, "%s", user);
	conn_hold(c);
	return j;
}

static void auth_work(uv_work_t *w)
{
	struct auth_job *j = w->data;
	j->ok = auth_check_password(j->password, j->hash);
}

static void cache_put(struct auth_job *j)
{
	unsigned ttl = auth_cfg(j->c)->cache_ttl;
	unsigned char key[32];
	if (!ttl || !A.cache.nb)
		return;
	auth_mac("cache", j->user, strlen(j->user), NULL, 0, key);
	struct lru_ent *e = lru_find(&A.cache, key);
	if (!e && !(e = lru_add(&A.cache, key)))
		return;
	e->user_id = j->user_id;
	memcpy(e->pw, j->pw, 32);
	auth_mac("fp", j->hash, strlen(j->hash), NULL, 0, e->fp);
	e->t = uv_now(conn_server(j->c)->loop) + (uint64_t)ttl * 1000;
}

/* A cached verification of this user, password and stored hash: the hash
 * string changes with every `user passwd` (new salt) and is gone after
 * `user del`, and it is read from the store on every check, so a change
 * made by the CLI in another process is seen at once. */
static bool cache_hit(struct auth_job *j)
{
	unsigned char key[32], fp[32];
	if (!auth_cfg(j->c)->cache_ttl || !A.cache.nb || !j->hash)
		return false;
	auth_mac("cache", j->user, strlen(j->user), NULL, 0, key);
	struct lru_ent *e = lru_find(&A.cache, key);
	if (!e)
		return false;
	auth_mac("fp", j->hash, strlen(j->hash), NULL, 0, fp);
	if (uv_now(conn_server(j->c)->loop) >= e->t || !equal32(fp, e->fp) ||
	    e->user_id != j->user_id) {
		lru_del(&A.cache, e);
		return false;
	}
	return equal32(e->pw, j->pw);
}

/*
 * A hash for the same name, password and stored hash already running: the
 * answer will be the same, so wait for it instead of hashing again.  Many
 * clients of one account logging in at once (a pool of IMAP connections,
 * a restart of the daemon) would otherwise queue one slow hash each, all
 * before the first could fill the cache.  Unknown names are joined the
 * same way (their key is the name as typed and no hash), so answers for
 * them take as long as for known names under load too.
 */
static struct auth_job **flight_bucket(const struct auth_job *j)
{
	return &A.flights[j->pw[0]];
}

static struct auth_job *flight_find(const struct auth_job *j)
{
	for (struct auth_job *f = *flight_bucket(j); f; f = f->fnext) {
		if (!equal32(f->pw, j->pw) || f->user_id != j->user_id)
			continue;
		if (!f->hash != !j->hash || (f->hash && strcmp(f->hash, j->hash) != 0))
			continue;
		return f;
	}
	return NULL;
}

static void auth_done(uv_work_t *w, int status)
{
	struct auth_job *j = w->data;
	bool ok = status == 0 && j->ok;
	if (j->fpprev) {
		*j->fpprev = j->fnext;
		if (j->fnext)
			j->fnext->fpprev = j->fpprev;
		j->fpprev = NULL;
	}
	if (ok)
		cache_put(j);
	explicit_bzero(j->password, strlen(j->password));
	struct auth_job *f = j->followers;
	j->followers = NULL;
	auth_finish(j, ok);
	while (f) {
		struct auth_job *next = f->follow_next;
		auth_finish(f, ok);
		f = next;
	}
}

static void password_start(conn *c, const char *user, const char *password, conn_auth_cb cb,
                           conn_auth_arg_cb acb, void *arg)
{
	struct auth_job *j = job_new(c, user, cb, acb, arg);
	if (!j) {
		if (cb)
			cb(c, conn_session(c), false, NULL, 0);
		else
			acb(c, arg, false, NULL, 0);
		return;
	}
	j->password = strdup(password);
	store_txn *t = store_read_begin(conn_store(c));
	if (t) {
		struct store_user u;
		if (store_user_get(t, user, &u) == STORE_OK) {
			j->hash = strdup(u.pass_hash);
			j->user_id = u.id;
			j->user = strdup(u.name);
		}
		store_read_end(t);
	}
	if (!j->password) {
		auth_finish(j, false);
		return;
	}
	if (j->user)
		auth_mac("pw", j->user, strlen(j->user), password, strlen(password), j->pw);
	else
		auth_mac("pw", j->typed, strlen(j->typed), password, strlen(password), j->pw);
	if (j->user && cache_hit(j)) {
		conn_log(c, LOGL_DEBUG, "auth: verification cache hit");
		auth_finish(j, true);
		return;
	}
	struct auth_job *lead = flight_find(j);
	if (lead) {
		conn_log(c, LOGL_DEBUG, "auth: joining a verification in progress");
		explicit_bzero(j->password, strlen(j->password));
		j->follow_next = lead->followers;
		lead->followers = j;
		return;
	}
	struct auth_job **head = flight_bucket(j);
	j->fnext = *head;
	if (j->fnext)
		j->fnext->fpprev = &j->fnext;
	j->fpprev = head;
	*head = j;
	j->work.data = j;
	if (uv_queue_work(conn_server(c)->loop, &j->work, auth_work, auth_done) != 0)
		auth_done(&j->work, -1);
}

void conn_auth_password(conn *c, const char *user, const char *password, conn_auth_cb cb)
{
	password_start(c, user, password, cb, NULL, NULL);
}

void conn_auth_password_arg(conn *c, const char *user, const char *password,
                            conn_auth_arg_cb cb, void *arg)
{
	password_start(c, user, password, NULL, cb, arg);
}

void conn_auth_report(conn *c, const char *user, bool ok, uint32_t user_id,
                      conn_auth_arg_cb cb, void *arg)
{
	struct auth_job *j = job_new(c, user, NULL, cb, arg);
	if (!j) {
		cb(c, arg, false, NULL, 0);
		return;
	}
	j->user = strdup(user);
	j->user_id = user_id;
	auth_finish(j, ok);
}

void conn_auth_scram_lookup(conn *c, const char *user, struct conn_scram_cred *out)
{
	struct sasl_scram_secret sec;
	bool have = false;

	auth_init(c);
	memset(out, 0, sizeof *out);
	store_txn *t = store_read_begin(conn_store(c));
	if (t) {
		struct store_user u;
		if (store_user_get(t, user, &u) == STORE_OK) {
			if (sasl_scram_parse(u.scram, &sec) && strlen(u.scram) < sizeof out->secret &&
			    strlen(u.name) < sizeof out->user) {
				have = true;
				out->found = true;
				out->user_id = u.id;
				memcpy(out->user, u.name, strlen(u.name) + 1);
				memcpy(out->secret, u.scram, strlen(u.scram) + 1);
			} else {
				conn_log(c, LOGL_INFO, "auth: user %s has no SCRAM secret; "
				         "`onebox user passwd` makes one", u.name);
			}
		}
		store_read_end(t);
	}
	if (have)
		return;
	/* The fake: a salt and keys fixed per name for this process, the
	 * configured iterations, and found false so that no proof matches. */
	unsigned char mac[32];
	char s64[32], k64[48];
	auth_mac("salt", user, strlen(user), NULL, 0, mac);
	sasl_b64_encode(mac, 16, s64, sizeof s64);
	auth_mac("keys", user, strlen(user), NULL, 0, mac);
	sasl_b64_encode(mac, 32, k64, sizeof k64);
	snprintf(out->secret, sizeof out->secret, "SCRAM-SHA-256$%u:%s$%s:%s",
	         auth_cfg(c)->scram_iterations, s64, k64, k64);
}

void auth_stop(void)
{
	A.stopping = true;
	while (A.delayed) {
		struct auth_job *j = A.delayed;
		uv_timer_stop(&j->timer);
		job_deliver(&j->timer);
	}
}
