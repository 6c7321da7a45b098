/*
 * tls.c - TLS through GnuTLS: the server's certificate, reloadable on
 * SIGHUP, and per-connection server sessions on memory buffers.
 *
 * A tls_creds is the handle the server keeps; it points at the current
 * tls_cert, a reference-counted snapshot (credentials, priority cache,
 * session-ticket key).  A session takes a reference at creation, so a reload
 * only affects connections accepted afterwards.  Sessions never touch a
 * socket: conn.c feeds ciphertext in and gets ciphertext out through a push
 * callback (see tls_internal.h).
 */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/tls_internal.h"

/* TLS 1.2 is the floor (DESIGN.md section 3; RFC 8996 deprecates 1.0/1.1). */
#define TLS_DEFAULT_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* Ciphertext buffered per connection: a bit more than one full record
 * (2^14 plus expansion, RFC 8446 section 5.2). */
#define TLS_IN_CAP (32 * 1024)

/* How many non-fatal GnuTLS results (warning alerts, renegotiation
 * requests) one call tolerates before giving up: a peer must not keep us
 * spinning. */
#define TLS_MAX_WARNINGS 16

struct tls_cert {
	unsigned refs;
	gnutls_certificate_credentials_t x509;
	gnutls_priority_t prio;
	gnutls_datum_t ticket_key;
};

struct tls_creds {
	char *cert_file;
	char *key_file;
	char *priorities;
	struct tls_cert *cur;
};

struct tls_sess {
	gnutls_session_t s;
	struct tls_cert *cert;
	tls_push_fn push;
	void *arg;
	char *in;        /* ciphertext from the socket, TLS_IN_CAP when allocated */
	size_t in_off;   /* consumed by GnuTLS */
	size_t in_len;
	bool eof;
};

/* ------------------------------------------------------- credentials */

static void cert_unref(struct tls_cert *c)
{
	if (!c || --c->refs > 0)
		return;
	if (c->x509)
		gnutls_certificate_free_credentials(c->x509);
	if (c->prio)
		gnutls_priority_deinit(c->prio);
	if (c->ticket_key.data) {
		gnutls_memset(c->ticket_key.data, 0, c->ticket_key.size);
		gnutls_free(c->ticket_key.data);
	}
	free(c);
}

static struct tls_cert *cert_load(const struct tls_creds *t, char *err, size_t errlen)
{
	struct tls_cert *c = calloc(1, sizeof *c);
	if (!c) {
		snprintf(err, errlen, "tls: out of memory");
		return NULL;
	}
	c->refs = 1;
	int r = gnutls_certificate_allocate_credentials(&c->x509);
	if (r < 0) {
		snprintf(err, errlen, "tls: %s", gnutls_strerror(r));
		goto fail;
	}
	r = gnutls_certificate_set_x509_key_file2(c->x509, t->cert_file, t->key_file,
	                                          GNUTLS_X509_FMT_PEM, NULL, 0);
	if (r < 0) {
		snprintf(err, errlen, "tls: certificate %s, key %s: %s", t->cert_file,
		         t->key_file, gnutls_strerror(r));
		goto fail;
	}
	/* RFC 7919 groups for TLS 1.2 DHE suites. */
	gnutls_certificate_set_known_dh_params(c->x509, GNUTLS_SEC_PARAM_MEDIUM);

	const char *errpos = NULL;
	r = gnutls_priority_init2(&c->prio, t->priorities, &errpos, 0);
	if (r < 0) {
		snprintf(err, errlen, "tls: priority string \"%s\": %s%s%s", t->priorities,
		         gnutls_strerror(r), errpos ? " at " : "", errpos ? errpos : "");
		c->prio = NULL;
		goto fail;
	}
	/* Session tickets (RFC 5077, RFC 8446 section 4.6.1) let reconnecting
	 * clients skip the certificate exchange; a reload starts a new key. */
	if (gnutls_session_ticket_key_generate(&c->ticket_key) < 0)
		c->ticket_key.data = NULL;
	return c;
fail:
	cert_unref(c);
	return NULL;
}

tls_creds *tls_creds_load(const char *cert, const char *key, const char *priorities,
                          char *err, size_t errlen)
{
	if (!cert || !key) {
		snprintf(err, errlen, "tls: both a certificate and a key are needed");
		return NULL;
	}
	tls_creds *t = calloc(1, sizeof *t);
	if (!t) {
		snprintf(err, errlen, "tls: out of memory");
		return NULL;
	}
	t->cert_file = strdup(cert);
	t->key_file = strdup(key);
	t->priorities = strdup(priorities && *priorities ? priorities : TLS_DEFAULT_PRIORITIES);
	if (!t->cert_file || !t->key_file || !t->priorities) {
		snprintf(err, errlen, "tls: out of memory");
		tls_creds_free(t);
		return NULL;
	}
	t->cur = cert_load(t, err, errlen);
	if (!t->cur) {
		tls_creds_free(t);
		return NULL;
	}
	return t;
}

int tls_creds_reload(tls_creds *t, char *err, size_t errlen)
{
	struct tls_cert *c = cert_load(t, err, errlen);
	if (!c)
		return -1;
	cert_unref(t->cur); /* sessions using it keep their own references */
	t->cur = c;
	return 0;
}

void tls_creds_free(tls_creds *t)
{
	if (!t)
		return;
	cert_unref(t->cur);
	free(t->cert_file);
	free(t->key_file);
	free(t->priorities);
	free(t);
}

/* ---------------------------------------------------------- sessions */

static ssize_t sess_push(gnutls_transport_ptr_t ptr, const void *p, size_t len)
{
	struct tls_sess *s = ptr;
	s->push(s->arg, p, len);
	return (ssize_t)len;
}

static ssize_t sess_pull(gnutls_transport_ptr_t ptr, void *p, size_t len)
{
	struct tls_sess *s = ptr;
	size_t avail = s->in_len - s->in_off;
	if (avail == 0) {
		if (s->eof)
			return 0;
		gnutls_transport_set_errno(s->s, EAGAIN);
		return -1;
	}
	size_t n = len < avail ? len : avail;
	memcpy(p, s->in + s->in_off, n);
	s->in_off += n;
	return (ssize_t)n;
}

/* Needed by TLS 1.3 in non-blocking use: "is there input?", never waits. */
static int sess_pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
	struct tls_sess *s = ptr;
	(void)ms;
	if (s->in_len > s->in_off || s->eof)
		return 1;
	gnutls_transport_set_errno(s->s, EAGAIN);
	return 0;
}

struct tls_sess *tls_sess_new(tls_creds *t, tls_push_fn push, void *arg)
{
	if (!t || !t->cur)
		return NULL;
	struct tls_sess *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	if (gnutls_init(&s->s, GNUTLS_SERVER | GNUTLS_NONBLOCK) < 0) {
		free(s);
		return NULL;
	}
	s->cert = t->cur;
	s->cert->refs++;
	s->push = push;
	s->arg = arg;
	if (gnutls_priority_set(s->s, s->cert->prio) < 0 ||
	    gnutls_credentials_set(s->s, GNUTLS_CRD_CERTIFICATE, s->cert->x509) < 0) {
		tls_sess_free(s);
		return NULL;
	}
	if (s->cert->ticket_key.data)
		gnutls_session_ticket_enable_server(s->s, &s->cert->ticket_key);
	gnutls_certificate_server_set_request(s->s, GNUTLS_CERT_IGNORE);
	gnutls_transport_set_ptr(s->s, s);
	gnutls_transport_set_push_function(s->s, sess_push);
	gnutls_transport_set_pull_function(s->s, sess_pull);
	gnutls_transport_set_pull_timeout_function(s->s, sess_pull_timeout);
	return s;
}

void tls_sess_free(struct tls_sess *s)
{
	if (!s)
		return;
	gnutls_deinit(s->s);
	cert_unref(s->cert);
	free(s->in);
	free(s);
}

char *tls_sess_inbuf(struct tls_sess *s, size_t *room)
{
	if (!s->in) {
		s->in = malloc(TLS_IN_CAP);
		if (!s->in) {
			*room = 0;
			return NULL;
		}
	}
	if (s->in_off > 0) {
		memmove(s->in, s->in + s->in_off, s->in_len - s->in_off);
		s->in_len -= s->in_off;
		s->in_off = 0;
	}
	*room = TLS_IN_CAP - s->in_len;
	return s->in + s->in_len;
}

void tls_sess_received(struct tls_sess *s, size_t n)
{
	s->in_len += n;
}

bool tls_sess_in_full(const struct tls_sess *s)
{
	return s->in && s->in_len - s->in_off == TLS_IN_CAP;
}

void tls_sess_set_eof(struct tls_sess *s)
{
	s->eof = true;
}

/* An idle connection should not pin a buffer. */
static void sess_trim(struct tls_sess *s)
{
	if (s->in && s->in_off == s->in_len) {
		free(s->in);
		s->in = NULL;
		s->in_off = s->in_len = 0;
	}
}

int tls_sess_handshake(struct tls_sess *s, const char **why)
{
	for (int warnings = 0; warnings < TLS_MAX_WARNINGS; warnings++) {
		int r = gnutls_handshake(s->s);
		if (r == GNUTLS_E_SUCCESS) {
			sess_trim(s);
			return 1;
		}
		if (r == GNUTLS_E_AGAIN) {
			sess_trim(s);
			if (s->eof) {
				*why = "connection closed during the handshake";
				return -1;
			}
			return 0;
		}
		if (gnutls_error_is_fatal(r)) {
			*why = gnutls_strerror(r);
			return -1;
		}
	}
	*why = "too many warnings during the handshake";
	return -1;
}

ssize_t tls_sess_recv(struct tls_sess *s, char *buf, size_t cap, const char **why)
{
	for (int warnings = 0; warnings < TLS_MAX_WARNINGS; warnings++) {
		ssize_t r = gnutls_record_recv(s->s, buf, cap);
		if (r > 0)
			return r;
		if (r == 0 || r == GNUTLS_E_PREMATURE_TERMINATION)
			return TLS_RECV_EOF;
		if (r == GNUTLS_E_AGAIN) {
			sess_trim(s);
			return s->eof ? TLS_RECV_EOF : 0;
		}
		if (r == GNUTLS_E_REHANDSHAKE) {
			/* A TLS 1.2 client asked to renegotiate: we never do
			 * (RFC 5746 section 4.4 allows refusing). */
			gnutls_alert_send(s->s, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION);
			continue;
		}
		if (gnutls_error_is_fatal((int)r)) {
			*why = gnutls_strerror((int)r);
			return TLS_RECV_ERR;
		}
	}
	*why = "too many TLS warnings";
	return TLS_RECV_ERR;
}

bool tls_sess_has_input(struct tls_sess *s)
{
	return s->in_len > s->in_off || gnutls_record_check_pending(s->s) > 0;
}

int tls_sess_send(struct tls_sess *s, const void *p, size_t len, const char **why)
{
	const char *q = p;
	int retries = 0;
	while (len > 0) {
		ssize_t r = gnutls_record_send(s->s, q, len);
		if (r > 0) {
			q += r;
			len -= (size_t)r;
			continue;
		}
		/* The push function never blocks, so AGAIN is not expected;
		 * retry a little, then give up rather than spin. */
		if ((r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) && ++retries < 4)
			continue;
		*why = gnutls_strerror((int)r);
		return -1;
	}
	return 0;
}

void tls_sess_bye(struct tls_sess *s)
{
	(void)gnutls_bye(s->s, GNUTLS_SHUT_WR);
}

void tls_sess_describe(struct tls_sess *s, char *buf, size_t len)
{
	const char *v = gnutls_protocol_get_name(gnutls_protocol_get_version(s->s));
	const char *c = gnutls_cipher_get_name(gnutls_cipher_get(s->s));
	snprintf(buf, len, "%s %s", v ? v : "TLS", c ? c : "");
}
