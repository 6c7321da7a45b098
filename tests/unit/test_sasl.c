/*
 * test_sasl.c - unit tests of protocols/sasl.c: base64, the SCRAM-SHA-256
 * exchange against the test vector of RFC 7677 section 3, and the syntax
 * errors of PLAIN, LOGIN and SCRAM.  The conn_* services sasl.c needs are
 * stubbed here: one user "user" with password "pencil".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "protocols/sasl.h"

/* ---------------------------------------------------------------- stubs */

static struct proto_settings settings = { .allow_plaintext = true };
static char vector_secret[256];
static int reports, report_ok;
static char password_seen[64];

bool conn_is_tls(const conn *c) { return false; }
const struct proto_settings *conn_settings(conn *c) { return &settings; }

void conn_auth_password_arg(conn *c, const char *user, const char *password,
                            conn_auth_arg_cb cb, void *arg)
{
	snprintf(password_seen, sizeof password_seen, "%s:%s", user, password);
	bool ok = strcmp(user, "user") == 0 && strcmp(password, "pencil") == 0;
	cb(c, arg, ok, ok ? "user" : NULL, ok ? 7 : 0);
}

void conn_auth_scram_lookup(conn *c, const char *user, struct conn_scram_cred *out)
{
	memset(out, 0, sizeof *out);
	if (strcmp(user, "user") == 0) {
		out->found = true;
		out->user_id = 7;
		strcpy(out->user, "user");
		strcpy(out->secret, vector_secret);
	} else {
		strcpy(out->secret, "SCRAM-SHA-256$4096:c2FsdA==$"
		       "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:"
		       "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
	}
}

void conn_auth_report(conn *c, const char *user, bool ok, uint32_t user_id,
                      conn_auth_arg_cb cb, void *arg)
{
	reports++;
	report_ok = ok;
	cb(c, arg, ok, ok ? user : NULL, user_id);
}

static enum sasl_status last_cb;
static void on_cb(sasl *x, void *arg, enum sasl_status st)
{
	last_cb = st;
}

/* ---------------------------------------------------------------- tests */

static enum sasl_status step_str(sasl *x, const char *s)
{
	unsigned char buf[512];
	size_t n = strlen(s);
	memcpy(buf, s, n);
	return sasl_step(x, buf, n, true);
}

static bool challenge_is(sasl *x, const char *want)
{
	size_t n;
	const unsigned char *c = sasl_challenge(x, &n);
	if (n != strlen(want) || memcmp(c, want, n) != 0) {
		fprintf(stderr, "challenge %.*s, want %s\n", (int)n, (const char *)c, want);
		return false;
	}
	return true;
}

static void test_base64(void)
{
	unsigned char out[16];
	char enc[32];
	CHECK(sasl_b64_decode("", 0, out, sizeof out) == 0);
	CHECK(sasl_b64_decode("Zm9v", 4, out, sizeof out) == 3 && memcmp(out, "foo", 3) == 0);
	CHECK(sasl_b64_decode("Zm8=", 4, out, sizeof out) == 2);
	CHECK(sasl_b64_decode("Zg==", 4, out, sizeof out) == 1);
	CHECK(sasl_b64_decode("Zm9", 3, out, sizeof out) == -1);     /* unpadded */
	CHECK(sasl_b64_decode("Z=9v", 4, out, sizeof out) == -1);    /* pad inside */
	CHECK(sasl_b64_decode("Zm9v!!!!", 8, out, sizeof out) == -1);
	CHECK(sasl_b64_decode("Zg==Zg==", 8, out, sizeof out) == -1);
	CHECK(sasl_b64_decode("Zm9vZm9vZm9vZm9vZm9v", 20, out, 4) == -1); /* too long */
	CHECK(sasl_b64_encode((const unsigned char *)"foob", 4, enc, sizeof enc) == 8 &&
	      strcmp(enc, "Zm9vYg==") == 0);
	CHECK(sasl_b64_encode((const unsigned char *)"foob", 4, enc, 8) == 0);
}

/* RFC 7677 section 3. */
static void test_scram_vector(void)
{
	struct sasl_scram_secret sec, parsed;
	unsigned char salt[16];
	char s64[32], st64[48], sv64[48];

	CHECK(sasl_b64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", 24, salt, sizeof salt) == 16);
	CHECK(sasl_scram_derive("pencil", 6, salt, 16, 4096, &sec) == 0);
	sasl_b64_encode(sec.salt, sec.salt_len, s64, sizeof s64);
	sasl_b64_encode(sec.stored_key, 32, st64, sizeof st64);
	sasl_b64_encode(sec.server_key, 32, sv64, sizeof sv64);
	snprintf(vector_secret, sizeof vector_secret, "SCRAM-SHA-256$4096:%s$%s:%s", s64, st64, sv64);
	CHECK(sasl_scram_parse(vector_secret, &parsed));
	CHECK(memcmp(parsed.stored_key, sec.stored_key, 32) == 0 && parsed.iterations == 4096);

	sasl *x = sasl_new(NULL, "scram-sha-256", on_cb, NULL);
	CHECK(x != NULL);
	sasl_set_server_nonce(x, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
	CHECK(step_str(x, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == SASL_CONTINUE);
	CHECK(challenge_is(x, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
	                      "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));
	reports = 0;
	CHECK(step_str(x, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
	                  "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=") == SASL_PENDING);
	CHECK(reports == 1 && report_ok && last_cb == SASL_CONTINUE);
	CHECK(challenge_is(x, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));
	CHECK(sasl_step(x, NULL, 0, true) == SASL_SUCCESS);
	CHECK(strcmp(sasl_user(x), "user") == 0 && sasl_user_id(x) == 7);
	sasl_free(x);

	/* The same exchange with a wrong proof fails through conn_auth_report. */
	x = sasl_new(NULL, "SCRAM-SHA-256", on_cb, NULL);
	sasl_set_server_nonce(x, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
	CHECK(step_str(x, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == SASL_CONTINUE);
	CHECK(step_str(x, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
	                  "p=AHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=") == SASL_PENDING);
	CHECK(!report_ok && last_cb == SASL_FAILED);
	sasl_free(x);

	/* A wrong nonce in client-final fails too. */
	x = sasl_new(NULL, "SCRAM-SHA-256", on_cb, NULL);
	sasl_set_server_nonce(x, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
	CHECK(step_str(x, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == SASL_CONTINUE);
	CHECK(step_str(x, "c=biws,r=rOprNGfwEbeRWgbNEkqOXXX,"
	                  "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=") == SASL_PENDING);
	CHECK(!report_ok && last_cb == SASL_FAILED);
	sasl_free(x);

	/* An unknown user gets a challenge too (fake salt) and then fails. */
	x = sasl_new(NULL, "SCRAM-SHA-256", on_cb, NULL);
	CHECK(step_str(x, "n,,n=nobody,r=abc") == SASL_CONTINUE);
	CHECK(step_str(x, "c=biws,r=nonsense,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=") ==
	      SASL_PENDING);
	CHECK(!report_ok && last_cb == SASL_FAILED);
	sasl_free(x);
}

static void test_scram_syntax(void)
{
	static const char *const bad_first[] = {
		"", "x,,n=user,r=abc", "n,n=user,r=abc", "n,,r=abc", "n,,n=user",
		"n,,n=us=41er,r=abc", "n,,m=ext,n=user,r=abc", "n,,n=user,r=a,b",
	};
	for (size_t i = 0; i < sizeof bad_first / sizeof bad_first[0]; i++) {
		sasl *x = sasl_new(NULL, "SCRAM-SHA-256", on_cb, NULL);
		enum sasl_status st = step_str(x, bad_first[i]);
		if (st != SASL_MALFORMED)
			fprintf(stderr, "client-first \"%s\": %d\n", bad_first[i], st);
		CHECK(st == SASL_MALFORMED);
		sasl_free(x);
	}
	sasl *x = sasl_new(NULL, "SCRAM-SHA-256", on_cb, NULL);
	CHECK(step_str(x, "p=tls-unique,,n=user,r=abc") == SASL_FAILED); /* no -PLUS */
	sasl_free(x);
	x = sasl_new(NULL, "SCRAM-SHA-256", on_cb, NULL);
	CHECK(step_str(x, "n,a=other,n=user,r=abc") == SASL_NOT_PERMITTED);
	sasl_free(x);
	x = sasl_new(NULL, "SCRAM-SHA-256", on_cb, NULL);
	CHECK(step_str(x, "n,,n=user,r=abc") == SASL_CONTINUE);
	CHECK(step_str(x, "c=biws,r=abc") == SASL_MALFORMED); /* no proof */
	sasl_free(x);
}

static void test_plain_login(void)
{
	unsigned char buf[64];
	sasl *x = sasl_new(NULL, "PLAIN", on_cb, NULL);
	CHECK(sasl_step(x, NULL, 0, false) == SASL_CONTINUE);
	memcpy(buf, "\0user\0pencil", 12);
	last_cb = SASL_MALFORMED;
	CHECK(sasl_step(x, buf, 12, true) == SASL_PENDING);
	CHECK(last_cb == SASL_SUCCESS && strcmp(sasl_user(x), "user") == 0);
	sasl_free(x);

	x = sasl_new(NULL, "PLAIN", on_cb, NULL);
	memcpy(buf, "user-pencil", 11);
	CHECK(sasl_step(x, buf, 11, true) == SASL_MALFORMED);
	sasl_free(x);

	x = sasl_new(NULL, "PLAIN", on_cb, NULL);
	memcpy(buf, "admin\0user\0pencil", 17);
	CHECK(sasl_step(x, buf, 17, true) == SASL_NOT_PERMITTED);
	sasl_free(x);

	x = sasl_new(NULL, "LOGIN", on_cb, NULL);
	CHECK(sasl_step(x, NULL, 0, false) == SASL_CONTINUE && challenge_is(x, "Username:"));
	CHECK(step_str(x, "user") == SASL_CONTINUE && challenge_is(x, "Password:"));
	CHECK(step_str(x, "wrong") == SASL_PENDING && last_cb == SASL_FAILED);
	CHECK(strcmp(password_seen, "user:wrong") == 0);
	sasl_free(x);

	/* The plaintext policy. */
	settings.allow_plaintext = false;
	CHECK(sasl_mech_usable(NULL, "PLAIN") == SASL_MECH_NEEDS_TLS);
	CHECK(sasl_mech_usable(NULL, "SCRAM-SHA-256") == SASL_MECH_OK);
	CHECK(sasl_mech_usable(NULL, "CRAM-MD5") == SASL_MECH_UNKNOWN);
	CHECK(sasl_new(NULL, "LOGIN", on_cb, NULL) == NULL);
	char list[128];
	sasl_mech_list(NULL, " AUTH=", "", list, sizeof list);
	CHECK(strcmp(list, " AUTH=SCRAM-SHA-256") == 0);
	settings.allow_plaintext = true;
	sasl_mech_list(NULL, "", ",", list, sizeof list);
	CHECK(strcmp(list, "PLAIN,LOGIN,SCRAM-SHA-256,") == 0);
}

int main(void)
{
	test_base64();
	test_scram_vector();
	test_scram_syntax();
	test_plain_login();
	return check_summary();
}
