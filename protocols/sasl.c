/*
 * sasl.c - the SASL server shared by IMAP AUTHENTICATE and POP3 AUTH.
 *
 * Each mechanism is a small state machine over decoded client messages.
 * PLAIN and LOGIN hand the password to conn_auth_password_arg (thread pool,
 * verification cache, guessing delays); SCRAM-SHA-256 looks the stored
 * secret up with conn_auth_scram_lookup, checks the proof here (a few
 * HMACs: cheap enough for the loop) and reports the outcome through
 * conn_auth_report so that failures are counted and delayed the same way.
 * Nothing here knows IMAP or POP3 syntax.
 */
#include "protocols/sasl.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SASL_MAX_USER 255
#define SASL_MAX_PASS 1024
#define SASL_MAX_MSG 4096     /* SCRAM messages we keep for AuthMessage */
#define SCRAM_NONCE_BYTES 18  /* 24 base64 characters */

enum sasl_state {
	ST_START,        /* nothing received yet */
	ST_LOGIN_USER,   /* LOGIN: "Username:" sent */
	ST_LOGIN_PASS,   /* LOGIN: "Password:" sent */
	ST_SCRAM_FINAL,  /* SCRAM: server-first sent, waiting for client-final */
	ST_SCRAM_DONE,   /* SCRAM: server-final sent, waiting for the empty answer */
	ST_CHECKING,     /* waiting on the server */
	ST_OVER,
};

struct sasl {
	conn *c;
	enum sasl_mech mech;
	enum sasl_state state;
	sasl_cb cb;
	void *arg;
	char user[SASL_MAX_USER + 1];  /* as given, then canonical */
	uint32_t user_id;
	unsigned char chal[SASL_MAX_MSG];
	size_t chal_len;
	/* SCRAM: the parts of AuthMessage (RFC 5802 section 3) */
	char gs2[SASL_MAX_USER + 16];  /* gs2-header, e.g. "n,," */
	char first_bare[SASL_MAX_MSG];
	char server_first[SASL_MAX_MSG];
	char nonce[SASL_MAX_MSG];      /* client nonce + server nonce */
	char fixed_snonce[64];         /* tests only */
	struct sasl_scram_secret sec;
	bool found;
	unsigned char server_sig[32];
};

static const char *const mech_names[SASL_NMECHS] = { "PLAIN", "LOGIN", "SCRAM-SHA-256" };

/* ---------------------------------------------------------- the policy */

static int mech_find(const char *name)
{
	for (int i = 0; i < SASL_NMECHS; i++)
		if (strcasecmp(name, mech_names[i]) == 0)
			return i;
	return -1;
}

static bool mech_ok(conn *c, int m)
{
	if (m == SASL_SCRAM_SHA_256)
		return true;
	return conn_is_tls(c) || conn_settings(c)->allow_plaintext;
}

enum sasl_usable sasl_mech_usable(conn *c, const char *name)
{
	int m = mech_find(name);
	if (m < 0)
		return SASL_MECH_UNKNOWN;
	return mech_ok(c, m) ? SASL_MECH_OK : SASL_MECH_NEEDS_TLS;
}

void sasl_mech_list(conn *c, const char *prefix, const char *sep, char *buf, size_t len)
{
	size_t o = 0;
	if (len)
		buf[0] = '\0';
	for (int i = 0; i < SASL_NMECHS; i++) {
		if (!mech_ok(c, i))
			continue;
		int n = snprintf(buf + o, len - o, "%s%s%s", prefix, mech_names[i], sep);
		if (n < 0 || (size_t)n >= len - o)
			break;
		o += (size_t)n;
	}
}

/* ------------------------------------------------------------- base64 */

static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

long sasl_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
	size_t o = 0;

	if (len % 4)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		unsigned v = 0;
		int pad = 0;
		for (int j = 0; j < 4; j++) {
			char ch = in[i + j];
			const char *q = ch ? strchr(b64chars, ch) : NULL;
			int d;
			if (q)
				d = (int)(q - b64chars);
			else if (ch == '=' && j >= 2 && i + 4 == len)
				d = -1;
			else
				return -1;
			if (d < 0)
				pad++;
			else if (pad)
				return -1; /* data after padding */
			v = v << 6 | (unsigned)(d < 0 ? 0 : d);
		}
		size_t n = 3 - (size_t)pad;
		if (o + n > cap)
			return -1;
		out[o++] = (unsigned char)(v >> 16);
		if (n > 1)
			out[o++] = (unsigned char)(v >> 8);
		if (n > 2)
			out[o++] = (unsigned char)v;
	}
	return (long)o;
}

size_t sasl_b64_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
	size_t need = (len + 2) / 3 * 4 + 1, o = 0;
	if (cap < need)
		return 0;
	for (size_t i = 0; i < len; i += 3) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < len)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		out[o++] = b64chars[v >> 18 & 63];
		out[o++] = b64chars[v >> 12 & 63];
		out[o++] = i + 1 < len ? b64chars[v >> 6 & 63] : '=';
		out[o++] = i + 2 < len ? b64chars[v & 63] : '=';
	}
	out[o] = '\0';
	return o;
}

/* ------------------------------------------------------- SCRAM secrets */

static int hmac256(const void *key, size_t klen, const void *msg, size_t mlen,
                   unsigned char out[32])
{
	return gnutls_hmac_fast(GNUTLS_MAC_SHA256, key, klen, msg, mlen, out) < 0 ? -1 : 0;
}

int sasl_scram_derive(const char *password, size_t plen, const unsigned char *salt,
                      size_t salt_len, unsigned iterations, struct sasl_scram_secret *out)
{
	unsigned char salted[32], client_key[32];
	gnutls_datum_t key = { (unsigned char *)(uintptr_t)password, (unsigned)plen };
	gnutls_datum_t s = { (unsigned char *)(uintptr_t)salt, (unsigned)salt_len };
	int rc = -1;

	if (salt_len > sizeof out->salt || iterations == 0)
		return -1;
	/* SaltedPassword := Hi(Normalize(password), salt, i), Hi being PBKDF2
	 * with HMAC-SHA-256 (RFC 5802 section 2.2). */
	if (gnutls_pbkdf2(GNUTLS_MAC_SHA256, &key, &s, iterations, salted, sizeof salted) < 0)
		goto out;
	if (hmac256(salted, 32, "Client Key", 10, client_key) ||
	    gnutls_hash_fast(GNUTLS_DIG_SHA256, client_key, 32, out->stored_key) < 0 ||
	    hmac256(salted, 32, "Server Key", 10, out->server_key))
		goto out;
	memcpy(out->salt, salt, salt_len);
	out->salt_len = salt_len;
	out->iterations = iterations;
	rc = 0;
out:
	explicit_bzero(salted, sizeof salted);
	explicit_bzero(client_key, sizeof client_key);
	return rc;
}

char *sasl_scram_make(const char *password, unsigned iterations)
{
	struct sasl_scram_secret sec;
	unsigned char salt[16];
	char s64[32], st64[48], sv64[48];
	char *out = malloc(256);

	if (!out || gnutls_rnd(GNUTLS_RND_NONCE, salt, sizeof salt) < 0 ||
	    sasl_scram_derive(password, strlen(password), salt, sizeof salt, iterations, &sec)) {
		free(out);
		return NULL;
	}
	sasl_b64_encode(sec.salt, sec.salt_len, s64, sizeof s64);
	sasl_b64_encode(sec.stored_key, 32, st64, sizeof st64);
	sasl_b64_encode(sec.server_key, 32, sv64, sizeof sv64);
	snprintf(out, 256, "SCRAM-SHA-256$%u:%s$%s:%s", sec.iterations, s64, st64, sv64);
	explicit_bzero(&sec, sizeof sec);
	return out;
}

/* One base64 field of an RFC 5803 string, up to the character END. */
static const char *b64_field(const char *p, char end, unsigned char *out, size_t cap,
                             size_t *n)
{
	const char *e = strchr(p, end);
	long r;
	if (!e)
		return NULL;
	r = sasl_b64_decode(p, (size_t)(e - p), out, cap);
	if (r < 0)
		return NULL;
	*n = (size_t)r;
	return e + 1;
}

bool sasl_scram_parse(const char *s, struct sasl_scram_secret *out)
{
	static const char prefix[] = "SCRAM-SHA-256$";
	char *end;
	size_t n;

	if (!s || strncmp(s, prefix, sizeof prefix - 1) != 0)
		return false;
	s += sizeof prefix - 1;
	unsigned long it = strtoul(s, &end, 10);
	if (end == s || *end != ':' || it == 0 || it > 100000000)
		return false;
	out->iterations = (unsigned)it;
	s = b64_field(end + 1, '$', out->salt, sizeof out->salt, &out->salt_len);
	if (!s || out->salt_len == 0)
		return false;
	s = b64_field(s, ':', out->stored_key, 32, &n);
	if (!s || n != 32)
		return false;
	long r = sasl_b64_decode(s, strlen(s), out->server_key, 32);
	return r == 32;
}

/* -------------------------------------------------------- the exchange */

sasl *sasl_new(conn *c, const char *name, sasl_cb cb, void *arg)
{
	int m = mech_find(name);
	if (m < 0 || !mech_ok(c, m))
		return NULL;
	sasl *x = calloc(1, sizeof *x);
	if (!x)
		return NULL;
	x->c = c;
	x->mech = (enum sasl_mech)m;
	x->cb = cb;
	x->arg = arg;
	return x;
}

void sasl_free(sasl *x)
{
	if (!x)
		return;
	explicit_bzero(x, sizeof *x);
	free(x);
}

const unsigned char *sasl_challenge(const sasl *x, size_t *len)
{
	*len = x->chal_len;
	return x->chal;
}

char *sasl_challenge_b64(const sasl *x)
{
	size_t cap = x->chal_len / 3 * 4 + 8;
	char *b64 = malloc(cap);

	if (b64)
		sasl_b64_encode(x->chal, x->chal_len, b64, cap);
	return b64;
}

const char *sasl_user(const sasl *x)
{
	return x->user;
}

uint32_t sasl_user_id(const sasl *x)
{
	return x->user_id;
}

void sasl_set_server_nonce(sasl *x, const char *nonce)
{
	snprintf(x->fixed_snonce, sizeof x->fixed_snonce, "%s", nonce);
}

static enum sasl_status challenge(sasl *x, const void *p, size_t len)
{
	memcpy(x->chal, p, len);
	x->chal_len = len;
	return SASL_CONTINUE;
}

/* The password check finished (PLAIN, LOGIN). */
static void password_done(conn *c, void *arg, bool ok, const char *user, uint32_t user_id)
{
	sasl *x = arg;
	x->state = ST_OVER;
	if (ok) {
		snprintf(x->user, sizeof x->user, "%s", user);
		x->user_id = user_id;
	}
	x->cb(x, x->arg, ok ? SASL_SUCCESS : SASL_FAILED);
}

static enum sasl_status check_password(sasl *x, const char *user, size_t ulen,
                                       const char *pass, size_t plen)
{
	char p[SASL_MAX_PASS + 1];

	if (ulen == 0 || ulen > SASL_MAX_USER || plen > SASL_MAX_PASS ||
	    memchr(user, '\0', ulen) || memchr(pass, '\0', plen))
		return SASL_MALFORMED;
	memcpy(x->user, user, ulen);
	x->user[ulen] = '\0';
	memcpy(p, pass, plen);
	p[plen] = '\0';
	x->state = ST_CHECKING;
	conn_auth_password_arg(x->c, x->user, p, password_done, x);
	explicit_bzero(p, sizeof p);
	return SASL_PENDING;
}

/* PLAIN (RFC 4616 section 2): [authzid] NUL authcid NUL passwd. */
static enum sasl_status plain_step(sasl *x, const unsigned char *in, size_t len, bool present)
{
	if (!present)
		return challenge(x, "", 0);
	const char *p = (const char *)in, *end = p + len;
	const char *z1 = memchr(p, '\0', len);
	const char *z2 = z1 ? memchr(z1 + 1, '\0', (size_t)(end - z1 - 1)) : NULL;
	if (!z1 || !z2)
		return SASL_MALFORMED;
	const char *authcid = z1 + 1, *pass = z2 + 1;
	size_t zlen = (size_t)(z1 - p), clen = (size_t)(z2 - authcid);
	/* Acting as another user is not offered: an authzid must name the
	 * authenticating user itself. */
	if (zlen && (zlen != clen || memcmp(p, authcid, clen) != 0))
		return SASL_NOT_PERMITTED;
	return check_password(x, authcid, clen, pass, (size_t)(end - pass));
}

/* LOGIN: "Username:" then "Password:"; an initial response is the name. */
static enum sasl_status login_step(sasl *x, const unsigned char *in, size_t len, bool present)
{
	switch (x->state) {
	case ST_START:
		if (!present || len == 0) {
			x->state = ST_LOGIN_USER;
			return challenge(x, "Username:", 9);
		}
		/* the initial response is the user name */
		__attribute__((fallthrough));
	case ST_LOGIN_USER:
		if (len == 0 || len > SASL_MAX_USER || memchr(in, '\0', len))
			return SASL_MALFORMED;
		memcpy(x->user, in, len);
		x->user[len] = '\0';
		x->state = ST_LOGIN_PASS;
		return challenge(x, "Password:", 9);
	case ST_LOGIN_PASS: {
		char user[SASL_MAX_USER + 1];
		memcpy(user, x->user, sizeof user);
		return check_password(x, user, strlen(user), (const char *)in, len);
	}
	default:
		return SASL_MALFORMED;
	}
}

/* ---------------------------------------------------------------- SCRAM */

/* "attr=value" at *P up to the next ',' or the end: the value and its
 * length, *P moved past the comma.  NULL if the attribute is not A. */
static const char *scram_attr(const char **p, const char *end, char a, size_t *vlen)
{
	const char *s = *p;
	if (end - s < 2 || s[0] != a || s[1] != '=')
		return NULL;
	const char *v = s + 2, *comma = memchr(v, ',', (size_t)(end - v));
	const char *ve = comma ? comma : end;
	*vlen = (size_t)(ve - v);
	*p = comma ? comma + 1 : end;
	return v;
}

/* saslname (RFC 5802 section 5.1): "=2C" is ',' and "=3D" is '='. */
static bool scram_unescape(const char *v, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char ch = v[i];
		if (ch == '=') {
			if (n - i < 3)
				return false;
			if (v[i + 1] == '2' && v[i + 2] == 'C')
				ch = ',';
			else if (v[i + 1] == '3' && v[i + 2] == 'D')
				ch = '=';
			else
				return false;
			i += 2;
		} else if (ch == ',' || ch == '\0') {
			return false;
		}
		if (o + 1 >= cap)
			return false;
		out[o++] = ch;
	}
	out[o] = '\0';
	return o > 0;
}

static bool scram_nonce_ok(const char *v, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (v[i] < 0x21 || v[i] > 0x7e || v[i] == ',') /* printable, RFC 5802 §7 */
			return false;
	return true;
}

/* client-first-message (RFC 5802 section 7): gs2-header client-first-bare. */
static enum sasl_status scram_first(sasl *x, const unsigned char *in, size_t len)
{
	const char *p = (const char *)in, *end = p + len, *v;
	size_t n;
	char authzid[SASL_MAX_USER + 1] = "";

	if (len == 0 || len >= SASL_MAX_MSG || memchr(in, '\0', len))
		return SASL_MALFORMED;
	/* gs2-cbind-flag: "n" (client has no channel binding) or "y" (it
	 * has, but thinks we have none: true, we do not offer -PLUS).  "p"
	 * asks for binding we never advertised (section 5.1: fail). */
	if (len < 3 || (p[0] != 'n' && p[0] != 'y' && p[0] != 'p'))
		return SASL_MALFORMED;
	if (p[0] == 'p')
		return SASL_FAILED;
	if (p[1] != ',')
		return SASL_MALFORMED;
	p += 2;
	if (*p == 'a') {
		if (!(v = scram_attr(&p, end, 'a', &n)) || !scram_unescape(v, n, authzid, sizeof authzid))
			return SASL_MALFORMED;
	} else if (*p == ',') {
		p++;
	} else {
		return SASL_MALFORMED;
	}
	size_t gs2len = (size_t)(p - (const char *)in);
	if (gs2len >= sizeof x->gs2)
		return SASL_MALFORMED;
	memcpy(x->gs2, in, gs2len);
	x->gs2[gs2len] = '\0';

	const char *bare = p;
	if (*p == 'm') /* mandatory extensions are not supported (section 5.1) */
		return SASL_MALFORMED;
	if (!(v = scram_attr(&p, end, 'n', &n)) || !scram_unescape(v, n, x->user, sizeof x->user))
		return SASL_MALFORMED;
	const char *cnonce = scram_attr(&p, end, 'r', &n);
	if (!cnonce || !scram_nonce_ok(cnonce, n))
		return SASL_MALFORMED;
	/* Only extensions ("x=...") may follow; we know none (section 7). */
	for (const char *q = p; q < end;) {
		const char *comma = memchr(q, ',', (size_t)(end - q));
		if (end - q < 2 || !((q[0] | 0x20) >= 'a' && (q[0] | 0x20) <= 'z') || q[1] != '=')
			return SASL_MALFORMED;
		q = comma ? comma + 1 : end;
	}
	if (authzid[0] && strcmp(authzid, x->user) != 0)
		return SASL_NOT_PERMITTED;
	memcpy(x->first_bare, bare, (size_t)(end - bare));
	x->first_bare[end - bare] = '\0';

	struct conn_scram_cred cred;
	conn_auth_scram_lookup(x->c, x->user, &cred);
	if (!sasl_scram_parse(cred.secret, &x->sec))
		return SASL_FAILED; /* the server always gives a parsable one */
	x->found = cred.found;
	if (cred.found) {
		snprintf(x->user, sizeof x->user, "%s", cred.user);
		x->user_id = cred.user_id;
	}
	explicit_bzero(&cred, sizeof cred);

	char snonce[64];
	if (x->fixed_snonce[0]) {
		snprintf(snonce, sizeof snonce, "%s", x->fixed_snonce);
	} else {
		unsigned char rnd[SCRAM_NONCE_BYTES];
		if (gnutls_rnd(GNUTLS_RND_NONCE, rnd, sizeof rnd) < 0)
			return SASL_FAILED;
		sasl_b64_encode(rnd, sizeof rnd, snonce, sizeof snonce);
	}
	char salt64[SASL_SCRAM_SALT_MAX * 2];
	sasl_b64_encode(x->sec.salt, x->sec.salt_len, salt64, sizeof salt64);
	int w = snprintf(x->nonce, sizeof x->nonce, "%.*s%s", (int)n, cnonce, snonce);
	if (w < 0 || (size_t)w >= sizeof x->nonce)
		return SASL_MALFORMED;
	w = snprintf(x->server_first, sizeof x->server_first, "r=%s,s=%s,i=%u", x->nonce, salt64,
	             x->sec.iterations);
	if (w < 0 || (size_t)w >= sizeof x->server_first)
		return SASL_MALFORMED;
	x->state = ST_SCRAM_FINAL;
	return challenge(x, x->server_first, (size_t)w);
}

static void scram_reported(conn *c, void *arg, bool ok, const char *user, uint32_t user_id)
{
	sasl *x = arg;
	char v64[64];
	int n;

	if (!ok) {
		x->state = ST_OVER;
		x->cb(x, x->arg, SASL_FAILED);
		return;
	}
	/* server-final-message: "v=" ServerSignature (section 7). */
	sasl_b64_encode(x->server_sig, 32, v64, sizeof v64);
	n = snprintf((char *)x->chal, sizeof x->chal, "v=%s", v64);
	x->chal_len = (size_t)n;
	x->state = ST_SCRAM_DONE;
	x->cb(x, x->arg, SASL_CONTINUE);
}

/* client-final-message: channel-binding "," nonce ["," extensions] "," proof. */
static enum sasl_status scram_final(sasl *x, const unsigned char *in, size_t len)
{
	const char *p = (const char *)in, *end = p + len, *v;
	size_t n;
	unsigned char cb[sizeof x->gs2], proof[64];
	char msg[3 * SASL_MAX_MSG];
	unsigned char sig[32], client_key[32], stored[32];

	if (len == 0 || len >= SASL_MAX_MSG || memchr(in, '\0', len))
		return SASL_MALFORMED;
	/* c= is base64 of the gs2-header: no channel binding data follows it. */
	v = scram_attr(&p, end, 'c', &n);
	long cbl = v ? sasl_b64_decode(v, n, cb, sizeof cb) : -1;
	if (cbl < 0)
		return SASL_MALFORMED;
	v = scram_attr(&p, end, 'r', &n);
	if (!v)
		return SASL_MALFORMED;
	bool nonce_ok = n == strlen(x->nonce) && memcmp(v, x->nonce, n) == 0;
	/* Skip extensions up to the proof, which is last. */
	const char *proof_at = p;
	while (proof_at < end && !(end - proof_at > 2 && proof_at[0] == 'p' && proof_at[1] == '=')) {
		const char *comma = memchr(proof_at, ',', (size_t)(end - proof_at));
		if (!comma)
			return SASL_MALFORMED;
		proof_at = comma + 1;
	}
	p = proof_at;
	v = scram_attr(&p, end, 'p', &n);
	if (!v || p != end || proof_at - (const char *)in < 1)
		return SASL_MALFORMED;
	long pl = sasl_b64_decode(v, n, proof, sizeof proof);
	if (pl != 32)
		return SASL_MALFORMED;
	bool cb_ok = (size_t)cbl == strlen(x->gs2) && memcmp(cb, x->gs2, (size_t)cbl) == 0;

	/* AuthMessage := client-first-bare "," server-first "," client-final-without-proof */
	int w = snprintf(msg, sizeof msg, "%s,%s,%.*s", x->first_bare, x->server_first,
	                 (int)(proof_at - 1 - (const char *)in), (const char *)in);
	if (w < 0 || (size_t)w >= sizeof msg)
		return SASL_MALFORMED;
	bool ok = false;
	if (hmac256(x->sec.stored_key, 32, msg, (size_t)w, sig) == 0) {
		for (int i = 0; i < 32; i++)
			client_key[i] = proof[i] ^ sig[i];
		if (gnutls_hash_fast(GNUTLS_DIG_SHA256, client_key, 32, stored) >= 0) {
			unsigned char diff = 0;
			for (int i = 0; i < 32; i++)
				diff |= (unsigned char)(stored[i] ^ x->sec.stored_key[i]);
			ok = diff == 0;
		}
		ok = ok && hmac256(x->sec.server_key, 32, msg, (size_t)w, x->server_sig) == 0;
	}
	ok = ok && x->found && nonce_ok && cb_ok;
	explicit_bzero(client_key, sizeof client_key);
	x->state = ST_CHECKING;
	conn_auth_report(x->c, x->user, ok, ok ? x->user_id : 0, scram_reported, x);
	return SASL_PENDING;
}

static enum sasl_status scram_step(sasl *x, const unsigned char *in, size_t len, bool present)
{
	switch (x->state) {
	case ST_START:
		if (!present)
			return challenge(x, "", 0);
		return scram_first(x, in, len);
	case ST_SCRAM_FINAL:
		return scram_final(x, in, len);
	case ST_SCRAM_DONE:
		/* RFC 5802 section 5: the client answers server-final with an
		 * empty response; the outcome is then sent in the protocol. */
		x->state = ST_OVER;
		return len == 0 ? SASL_SUCCESS : SASL_MALFORMED;
	default:
		return SASL_MALFORMED;
	}
}

enum sasl_status sasl_step(sasl *x, unsigned char *in, size_t len, bool present)
{
	enum sasl_status st;

	if (x->state == ST_CHECKING || x->state == ST_OVER)
		return SASL_MALFORMED;
	switch (x->mech) {
	case SASL_PLAIN:
		st = plain_step(x, in, len, present);
		break;
	case SASL_LOGIN:
		st = login_step(x, in, len, present);
		break;
	default:
		st = scram_step(x, in, len, present);
		break;
	}
	if (in && len)
		explicit_bzero(in, len);
	if (st != SASL_CONTINUE && st != SASL_PENDING)
		x->state = ST_OVER;
	return st;
}

enum sasl_status sasl_step_b64(sasl *x, const char *b64, size_t len)
{
	unsigned char buf[SASL_MAX_MESSAGE];
	long n = sasl_b64_decode(b64, len, buf, sizeof buf);
	enum sasl_status st;

	if (n < 0)
		return SASL_BAD_BASE64;
	st = sasl_step(x, buf, (size_t)n, true);
	explicit_bzero(buf, sizeof buf);
	return st;
}
