/*
 * fuzz_config.c - libFuzzer target for the configuration loader
 * (server/cfg.h).  The input is a config file: it is written to
 * onebox.conf in a private temporary directory holding the files a
 * config names (cert.pem, key.pem, data/), loaded with cfg_load() with
 * errors going to /dev/null, and a loaded config is checked against
 * cfg.h's promises (absolute paths, listeners well formed) and freed.
 *
 * Inputs with "@include" are skipped: libconfig would read whatever file
 * they name (/dev/zero never ends), and the config is the operator's own
 * input, not a client's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/cfg.h"

static char dir[64];
static char path[96];
static FILE *devnull;

static void fail(const char *what)
{
	fprintf(stderr, "cfg_load broke its contract: %s\n", what);
	abort();
}

static void cleanup(void)
{
	char p[128];
	static const char *const names[] = { "onebox.conf", "cert.pem", "key.pem" };

	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		unlink(p);
	}
	snprintf(p, sizeof p, "%s/data", dir);
	rmdir(p);
	rmdir(dir);
}

static void touch(const char *name)
{
	char p[128];
	FILE *f;

	snprintf(p, sizeof p, "%s/%s", dir, name);
	f = fopen(p, "w");
	if (!f)
		abort();
	fputs("not really a PEM file\n", f);
	fclose(f);
}

static void setup(void)
{
	char p[128];

	if (dir[0])
		return;
	snprintf(dir, sizeof dir, "%s/onebox-fuzz-XXXXXX",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (strlen(dir) > 40)
		snprintf(dir, sizeof dir, "/tmp/onebox-fuzz-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	atexit(cleanup);
	touch("cert.pem");
	touch("key.pem");
	snprintf(p, sizeof p, "%s/data", dir);
	mkdir(p, 0700);
	snprintf(path, sizeof path, "%s/onebox.conf", dir);
	devnull = fopen("/dev/null", "w");
	if (!devnull)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *f;
	struct cfg *c;

	if (memmem(data, size, "@include", 8))
		return 0;
	setup();
	f = fopen(path, "w");
	if (!f)
		abort();
	if (size && fwrite(data, 1, size, f) != size)
		abort();
	fclose(f);

	c = cfg_load(path, getenv("FUZZ_ECHO") ? stderr : devnull);
	if (!c)
		return 0;
	if (!c->file || !c->storage_path || c->storage_path[0] != '/')
		fail("storage path not absolute");
	if (!c->hostname || !c->log_level)
		fail("string defaults missing");
	if (c->proto.hostname != c->hostname)
		fail("proto.hostname is not the hostname");
	if ((c->tls_certificate == NULL) != (c->tls_key == NULL))
		fail("half a TLS configuration");
	for (size_t i = 0; i < c->nlisten; i++) {
		const struct cfg_listen *l = &c->listen[i];
		if (l->path) {
			if (l->protocol != CFG_LMTP || l->address || l->path[0] != '/')
				fail("unix socket listener malformed");
		} else if (!l->address || l->port < 1 || l->port > 65535) {
			fail("TCP listener malformed");
		}
		(void)cfg_proto_name(l->protocol);
	}
	cfg_free(c);
	return 0;
}
