/*
 * loadgen.c - onebox-loadgen's entry point: the command line, the run's
 * clock (the duration, the hard cap, the tick that sweeps timeouts), the
 * counters and histograms, and the one JSON object it prints on stdout.
 * The modes live in loadgen_<mode>.c; see loadgen.h for the layout.
 */
#include "loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

struct lg_state lg;

#define MAX_STATS 48
#define MAX_ERROR_SAMPLES 8

static lg_stat *stats[MAX_STATS];
static size_t nstats;
static char *error_samples[MAX_ERROR_SAMPLES];
static size_t nerror_samples;

static uv_timer_t tick_timer;
static uv_timer_t cap_timer;
static uv_signal_t sig_int;
static uv_signal_t sig_term;

/* ------------------------------------------------------------ utilities */

uint64_t lg_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t lg_rand(uint64_t *state)
{
	uint64_t x = *state ? *state : 0x9e3779b97f4a7c15u;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1du;
}

void lg_error(const char *fmt, ...)
{
	char buf[300];
	va_list ap;

	lg.errors++;
	if (nerror_samples >= MAX_ERROR_SAMPLES)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	error_samples[nerror_samples] = strdup(buf);
	if (error_samples[nerror_samples] != NULL)
		nerror_samples++;
	fprintf(stderr, "loadgen: %s\n", buf);
}

void lg_first_failure(void)
{
	lg.first_failures++;
	if (lg.first_failures >= lg.nclients && lg.logins_ok == 0 && !lg.stopping) {
		lg.fatal = true;
		lg_abort("no client could connect or log in");
	}
}

static void close_handle(uv_handle_t *h)
{
	if (h->loop != NULL && !uv_is_closing(h))
		uv_close(h, NULL);
}

void lg_finish(void)
{
	if (lg.finished)
		return;
	lg.finished = true;
	lg.t_end = lg_now();
	close_handle((uv_handle_t *)&tick_timer);
	close_handle((uv_handle_t *)&cap_timer);
	close_handle((uv_handle_t *)&sig_int);
	close_handle((uv_handle_t *)&sig_term);
}

void lg_abort(const char *why)
{
	if (lg.stopping)
		return;
	lg.stopping = true;
	lg.draining = true;
	fprintf(stderr, "loadgen: stopping: %s\n", why);
	lg.mode->stop();
}

/* ----------------------------------------------------------- histograms */

lg_stat *lg_stat_new(const char *name, bool is_op)
{
	lg_stat *st;

	if (nstats == MAX_STATS) {
		fprintf(stderr, "loadgen: too many timers\n");
		exit(1);
	}
	st = calloc(1, sizeof *st);
	if (st == NULL) {
		fprintf(stderr, "loadgen: out of memory\n");
		exit(1);
	}
	st->name = name;
	st->is_op = is_op;
	stats[nstats++] = st;
	return st;
}

static size_t hist_index(uint64_t v)
{
	unsigned msb, shift;

	if (v < 256)
		return (size_t)v;
	if (v >= (UINT64_C(1) << 41))
		v = (UINT64_C(1) << 41) - 1;
	msb = 63u - (unsigned)__builtin_clzll(v);
	shift = msb - LG_HIST_SUB_BITS;
	return 256 + (size_t)(shift - 1) * 128 + (size_t)((v >> shift) - 128);
}

/* The midpoint of bucket I. */
static uint64_t hist_value(size_t i)
{
	uint64_t shift, top;

	if (i < 256)
		return i;
	shift = (i - 256) / 128 + 1;
	top = (i - 256) % 128 + 128;
	return (top << shift) + (UINT64_C(1) << shift) / 2;
}

void lg_stat_add(lg_stat *st, uint64_t ns)
{
	st->counts[hist_index(ns)]++;
	st->n++;
	st->sum_ns += ns;
	if (ns > st->max_ns)
		st->max_ns = ns;
	if (st->is_op)
		lg.ops++;
}

uint64_t lg_stat_pct(const lg_stat *st, double p)
{
	uint64_t rank, seen = 0;
	size_t i;

	if (st->n == 0)
		return 0;
	/* The nearest-rank percentile: the smallest value with at least P% of
	 * the samples at or below it. */
	rank = (uint64_t)(p / 100.0 * (double)st->n);
	if ((double)rank < p / 100.0 * (double)st->n)
		rank++;
	if (rank == 0)
		rank = 1;
	for (i = 0; i < LG_HIST_BUCKETS; i++) {
		seen += st->counts[i];
		if (seen >= rank) {
			uint64_t v = hist_value(i);
			return v > st->max_ns ? st->max_ns : v;
		}
	}
	return st->max_ns;
}

/* --------------------------------------------------------------- report */

static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static double rate(uint64_t n, double secs)
{
	return secs > 0 ? (double)n / secs : 0.0;
}

static void report(void)
{
	FILE *out = stdout;
	double secs = (double)(lg.t_end - lg.t_start) / 1e9;
	double rsecs = lg.rate_seconds > 0 ? lg.rate_seconds : secs;
	bool first = true;
	size_t i;

	fprintf(out, "{\"mode\": ");
	json_string(out, lg.o.mode);
	fprintf(out, ", \"clients\": %d, \"seconds\": %.3f, \"ops\": %llu, \"ops_per_sec\": %.2f",
	        lg.o.clients, secs, (unsigned long long)lg.ops, rate(lg.ops, rsecs));
	fprintf(out, ", \"messages\": %llu, \"messages_per_sec\": %.2f",
	        (unsigned long long)lg.messages, rate(lg.messages, rsecs));
	fprintf(out, ", \"errors\": %llu, \"error_samples\": [", (unsigned long long)lg.errors);
	for (i = 0; i < nerror_samples; i++) {
		if (i > 0)
			fputs(", ", out);
		json_string(out, error_samples[i]);
	}
	fputs("], \"latency_ms\": {", out);
	for (i = 0; i < nstats; i++) {
		const lg_stat *st = stats[i];

		if (st->n == 0)
			continue;
		fprintf(out, "%s", first ? "" : ", ");
		first = false;
		json_string(out, st->name);
		fprintf(out, ": {\"n\": %llu, \"p50\": %.3f, \"p99\": %.3f, \"max\": %.3f, "
		        "\"mean\": %.3f}",
		        (unsigned long long)st->n, ms(lg_stat_pct(st, 50)), ms(lg_stat_pct(st, 99)),
		        ms(st->max_ns), ms(st->sum_ns / st->n));
	}
	fputc('}', out);
	if (lg.mode->report != NULL)
		lg.mode->report(out);
	fputs("}\n", out);
	fflush(out);
}

/* --------------------------------------------------------------- timers */

static void on_tick(uv_timer_t *t)
{
	uint64_t now = lg_now();

	if (!lg.draining && now - lg.t_start >= (uint64_t)(lg.o.duration * 1e9))
		lg.draining = true;
	lg_conn_sweep(now);
	if (!lg.finished)
		lg.mode->tick(now);
}

static void on_cap(uv_timer_t *t)
{
	lg_error("hard time cap of %.0f s reached; reporting what was measured",
	         lg.o.max_seconds);
	lg_abort("hard time cap");
}

static void on_signal(uv_signal_t *s, int signum)
{
	lg_error("stopped by signal %d", signum);
	lg_abort("signal");
}

/* -------------------------------------------------------------- options */

static void usage(FILE *out)
{
	fputs("usage: onebox-loadgen MODE [options]\n"
	      "modes: imap-mix, pop3, lmtp, idle, large (see tests/bench/README.md)\n"
	      "common: --host ADDR (127.0.0.1) --port N --duration SECS (10)\n"
	      "        --user-fmt FMT (bench%d) --users N (1) --password PW\n"
	      "        --timeout SECS (30) --seed N (1) --source-addrs N (1)\n"
	      "        --max-seconds SECS (hard cap; 3 * duration + 60)\n"
	      "imap-mix: --clients N\n"
	      "pop3:     --clients N --lmtp-port L --refill K (50) --size BYTES (4096)\n"
	      "lmtp:     --clients N --size BYTES (4096) --rcpt-fmt FMT (= user-fmt)\n"
	      "          --no-pipelining (wait for each reply, even if PIPELINING is offered)\n"
	      "idle:     --clients N --lmtp-port L --deliveries K (10) --interval-ms MS (200)\n"
	      "          --push-timeout SECS (10) --connect-batch N (200) --size BYTES\n"
	      "large:    --pop3-port P --repeat R (3) --search-word W (zebra)\n",
	      out);
}

static bool parse_long(const char *s, long lo, long hi, long *v)
{
	char *end;

	errno = 0;
	*v = strtol(s, &end, 10);
	return errno == 0 && end != s && *end == '\0' && *v >= lo && *v <= hi;
}

static bool parse_double(const char *s, double lo, double hi, double *v)
{
	char *end;

	errno = 0;
	*v = strtod(s, &end);
	return errno == 0 && end != s && *end == '\0' && *v >= lo && *v <= hi;
}

/* FMT with its one %d replaced by I (and %% by %).  The format is
 * checked by check_fmt() first, so it never reaches printf. */
static char *fmt_name(const char *fmt, int i)
{
	char num[16], buf[512];
	size_t o = 0;
	const char *p;

	snprintf(num, sizeof num, "%d", i);
	for (p = fmt; *p != '\0' && o + sizeof num < sizeof buf; p++) {
		if (p[0] == '%' && p[1] == 'd') {
			memcpy(buf + o, num, strlen(num));
			o += strlen(num);
			p++;
		} else if (p[0] == '%' && p[1] == '%') {
			buf[o++] = '%';
			p++;
		} else {
			buf[o++] = *p;
		}
	}
	buf[o] = '\0';
	return strdup(buf);
}

static bool check_fmt(const char *fmt)
{
	int nd = 0;
	const char *p;

	if (strlen(fmt) > 200)
		return false;
	for (p = fmt; *p != '\0'; p++) {
		unsigned char ch = (unsigned char)*p;

		if (ch <= ' ' || ch == '"' || ch == '\\' || ch == '<' || ch == '>' || ch >= 0x7f)
			return false;
		if (ch != '%')
			continue;
		if (p[1] == 'd')
			nd++;
		else if (p[1] != '%')
			return false;
		p++;
	}
	return nd == 1;
}

/* Only loopback: the benchmark must never load another machine. */
static bool loopback_host(const char *h)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (inet_pton(AF_INET, h, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, h, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

enum {
	OPT_HOST = 256, OPT_PORT, OPT_DURATION, OPT_USER_FMT, OPT_USERS, OPT_PASSWORD,
	OPT_TIMEOUT, OPT_SEED, OPT_CLIENTS, OPT_LMTP_PORT, OPT_REFILL, OPT_SIZE,
	OPT_RCPT_FMT, OPT_DELIVERIES, OPT_INTERVAL, OPT_PUSH_TIMEOUT, OPT_SOURCE_ADDRS,
	OPT_CONNECT_BATCH, OPT_POP3_PORT, OPT_REPEAT, OPT_SEARCH_WORD, OPT_MAX_SECONDS, OPT_NO_PIPELINING, OPT_HELP,
};

static const struct option long_opts[] = {
	{ "host", required_argument, NULL, OPT_HOST },
	{ "port", required_argument, NULL, OPT_PORT },
	{ "duration", required_argument, NULL, OPT_DURATION },
	{ "user-fmt", required_argument, NULL, OPT_USER_FMT },
	{ "users", required_argument, NULL, OPT_USERS },
	{ "password", required_argument, NULL, OPT_PASSWORD },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "clients", required_argument, NULL, OPT_CLIENTS },
	{ "lmtp-port", required_argument, NULL, OPT_LMTP_PORT },
	{ "refill", required_argument, NULL, OPT_REFILL },
	{ "size", required_argument, NULL, OPT_SIZE },
	{ "rcpt-fmt", required_argument, NULL, OPT_RCPT_FMT },
	{ "deliveries", required_argument, NULL, OPT_DELIVERIES },
	{ "interval-ms", required_argument, NULL, OPT_INTERVAL },
	{ "push-timeout", required_argument, NULL, OPT_PUSH_TIMEOUT },
	{ "source-addrs", required_argument, NULL, OPT_SOURCE_ADDRS },
	{ "connect-batch", required_argument, NULL, OPT_CONNECT_BATCH },
	{ "pop3-port", required_argument, NULL, OPT_POP3_PORT },
	{ "repeat", required_argument, NULL, OPT_REPEAT },
	{ "search-word", required_argument, NULL, OPT_SEARCH_WORD },
	{ "max-seconds", required_argument, NULL, OPT_MAX_SECONDS },
	{ "no-pipelining", no_argument, NULL, OPT_NO_PIPELINING },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

static const struct lg_mode *const modes[] = {
	&lg_mode_imap_mix, &lg_mode_pop3, &lg_mode_lmtp, &lg_mode_idle, &lg_mode_large,
};

static int bad_usage(const char *fmt, ...) LG_PRINTF(1, 2);

static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "onebox-loadgen: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n(onebox-loadgen --help lists the options)\n", stderr);
	return 2;
}

/* Fill lg.o from ARGV; 0 when valid, else the exit status. */
static int parse_args(int argc, char **argv)
{
	struct lg_opts *o = &lg.o;
	const char *name;
	long v;
	double d;
	int ch;
	size_t i;

	o->host = "127.0.0.1";
	o->duration = 10;
	o->user_fmt = "bench%d";
	o->users = 1;
	o->clients = 1;
	o->timeout = 30;
	o->seed = 1;
	o->refill = 50;
	o->size = 4096;
	o->deliveries = 10;
	o->interval_ms = 200;
	o->push_timeout = 10;
	o->source_addrs = 1;
	o->connect_batch = 200;
	o->repeat = 3;
	o->search_word = "zebra";

	if (argc < 2 || argv[1][0] == '-') {
		if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
			usage(stdout);
			exit(0);
		}
		return bad_usage("%s", "a MODE is required");
	}
	o->mode = argv[1];
	for (i = 0; i < sizeof modes / sizeof modes[0]; i++)
		if (strcmp(modes[i]->name, o->mode) == 0)
			lg.mode = modes[i];
	if (lg.mode == NULL)
		return bad_usage("unknown mode '%s'", o->mode);

	optind = 2;
	while ((ch = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		name = optarg;
		switch (ch) {
		case OPT_HOST:
			o->host = optarg;
			break;
		case OPT_PORT:
		case OPT_LMTP_PORT:
		case OPT_POP3_PORT:
			if (!parse_long(optarg, 1, 65535, &v))
				return bad_usage("bad port '%s'", name);
			*(ch == OPT_PORT ? &o->port : ch == OPT_LMTP_PORT ? &o->lmtp_port
			                                                   : &o->pop3_port) = (int)v;
			break;
		case OPT_DURATION:
			if (!parse_double(optarg, 0.001, 86400, &o->duration))
				return bad_usage("bad --duration '%s'", name);
			break;
		case OPT_USER_FMT:
			o->user_fmt = optarg;
			break;
		case OPT_RCPT_FMT:
			o->rcpt_fmt = optarg;
			break;
		case OPT_NO_PIPELINING:
			o->no_pipelining = true;
			break;
		case OPT_USERS:
			if (!parse_long(optarg, 1, 1000000, &v))
				return bad_usage("bad --users '%s'", name);
			o->users = (int)v;
			break;
		case OPT_PASSWORD:
			if (strlen(optarg) > 200 || strpbrk(optarg, "\r\n") != NULL)
				return bad_usage("bad --password '%s'", name);
			o->password = optarg;
			break;
		case OPT_TIMEOUT:
			if (!parse_double(optarg, 0.01, 86400, &o->timeout))
				return bad_usage("bad --timeout '%s'", name);
			break;
		case OPT_SEED:
			if (!parse_long(optarg, 0, LONG_MAX, &v))
				return bad_usage("bad --seed '%s'", name);
			o->seed = (uint64_t)v;
			break;
		case OPT_CLIENTS:
			if (!parse_long(optarg, 1, 1000000, &v))
				return bad_usage("bad --clients '%s'", name);
			o->clients = (int)v;
			break;
		case OPT_REFILL:
			if (!parse_long(optarg, 1, 1000000, &v))
				return bad_usage("bad --refill '%s'", name);
			o->refill = (int)v;
			break;
		case OPT_SIZE:
			if (!parse_long(optarg, 512, 1L << 30, &v))
				return bad_usage("bad --size '%s' (512 to 1 GiB)", name);
			o->size = (size_t)v;
			break;
		case OPT_DELIVERIES:
			if (!parse_long(optarg, 0, 1000000, &v))
				return bad_usage("bad --deliveries '%s'", name);
			o->deliveries = (int)v;
			break;
		case OPT_INTERVAL:
			if (!parse_long(optarg, 0, 3600000, &v))
				return bad_usage("bad --interval-ms '%s'", name);
			o->interval_ms = (int)v;
			break;
		case OPT_PUSH_TIMEOUT:
			if (!parse_double(optarg, 0.001, 86400, &d))
				return bad_usage("bad --push-timeout '%s'", name);
			o->push_timeout = d;
			break;
		case OPT_SOURCE_ADDRS:
			if (!parse_long(optarg, 1, 254, &v))
				return bad_usage("bad --source-addrs '%s' (1 to 254)", name);
			o->source_addrs = (int)v;
			break;
		case OPT_CONNECT_BATCH:
			if (!parse_long(optarg, 1, 1000000, &v))
				return bad_usage("bad --connect-batch '%s'", name);
			o->connect_batch = (int)v;
			break;
		case OPT_REPEAT:
			if (!parse_long(optarg, 1, 1000000, &v))
				return bad_usage("bad --repeat '%s'", name);
			o->repeat = (int)v;
			break;
		case OPT_SEARCH_WORD:
			if (strlen(optarg) == 0 || strlen(optarg) > 100 ||
			    strpbrk(optarg, " \"\\(){}%*\r\n") != NULL)
				return bad_usage("bad --search-word '%s' (one plain word)", name);
			o->search_word = optarg;
			break;
		case OPT_MAX_SECONDS:
			if (!parse_double(optarg, 1, 7 * 86400, &o->max_seconds))
				return bad_usage("bad --max-seconds '%s'", name);
			break;
		case OPT_HELP:
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc)
		return bad_usage("unexpected argument '%s'", argv[optind]);
	if (!loopback_host(o->host))
		return bad_usage("--host %s is not a loopback address (127.0.0.0/8 or ::1)", o->host);
	if (strchr(o->host, ':') != NULL && o->source_addrs > 1)
		return bad_usage("%s", "--source-addrs needs an IPv4 --host");
	if (o->port == 0)
		return bad_usage("%s", "--port is required");
	if (o->rcpt_fmt == NULL)
		o->rcpt_fmt = o->user_fmt;
	if (!check_fmt(o->user_fmt))
		return bad_usage("bad --user-fmt '%s': printable, one %%d", o->user_fmt);
	if (!check_fmt(o->rcpt_fmt))
		return bad_usage("bad --rcpt-fmt '%s': printable, one %%d", o->rcpt_fmt);
	if (lg.mode != &lg_mode_lmtp && o->password == NULL)
		return bad_usage("%s", "--password is required");
	if ((lg.mode == &lg_mode_pop3 || lg.mode == &lg_mode_idle) && o->lmtp_port == 0)
		return bad_usage("%s", "--lmtp-port is required");
	if (lg.mode == &lg_mode_large && o->pop3_port == 0)
		return bad_usage("%s", "--pop3-port is required");
	if (lg.mode == &lg_mode_large)
		o->clients = 1;
	if (o->max_seconds == 0)
		o->max_seconds = 3 * o->duration + 60;
	return 0;
}

/* ----------------------------------------------------------------- main */

/* Every idle connection is a socket: take the whole allowance. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			fprintf(stderr, "loadgen: cannot raise the open-file limit: %s\n",
			        strerror(errno));
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && lg.mode == &lg_mode_idle &&
	    rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)lg.o.clients + 64)
		fprintf(stderr, "loadgen: open-file limit %llu is below --clients %d\n",
		        (unsigned long long)rl.rlim_cur, lg.o.clients);
}

static char **make_names(const char *fmt, int n)
{
	char **v = calloc((size_t)n, sizeof *v);
	int i;

	if (v == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		v[i] = fmt_name(fmt, i);
		if (v[i] == NULL)
			return v;   /* freed by free_names; start() sees NULL below */
	}
	return v;
}

static void free_names(char **v, int n)
{
	int i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void walk_close(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int main(int argc, char **argv)
{
	uv_loop_t loop;
	int rc, i;
	size_t k;

	rc = parse_args(argc, argv);
	if (rc != 0)
		return rc;
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();

	lg.timeout_ns = (uint64_t)(lg.o.timeout * 1e9);
	lg.nclients = (uint64_t)lg.o.clients;
	lg.users = make_names(lg.o.user_fmt, lg.o.users);
	lg.rcpts = make_names(lg.o.rcpt_fmt, lg.o.users);
	if (lg.users == NULL || lg.rcpts == NULL) {
		fprintf(stderr, "onebox-loadgen: out of memory\n");
		return 1;
	}
	for (i = 0; i < lg.o.users; i++)
		if (lg.users[i] == NULL || lg.rcpts[i] == NULL) {
			fprintf(stderr, "onebox-loadgen: out of memory\n");
			return 1;
		}

	if (uv_loop_init(&loop) != 0) {
		fprintf(stderr, "onebox-loadgen: cannot start the event loop\n");
		return 1;
	}
	lg.loop = &loop;
	lg.t_start = lg_now();
	lg.msg_nonce = (lg.t_start ^ (lg.o.seed << 40)) & 0xffffffffffff0000u;

	uv_timer_init(&loop, &tick_timer);
	uv_timer_init(&loop, &cap_timer);
	uv_timer_start(&tick_timer, on_tick, LG_TICK_MS, LG_TICK_MS);
	uv_timer_start(&cap_timer, on_cap, (uint64_t)(lg.o.max_seconds * 1000), 0);
	uv_signal_init(&loop, &sig_int);
	uv_signal_init(&loop, &sig_term);
	uv_signal_start_oneshot(&sig_int, on_signal, SIGINT);
	uv_signal_start_oneshot(&sig_term, on_signal, SIGTERM);

	if (lg.mode->start() != 0) {
		lg.fatal = true;
		if (!lg.stopping)
			lg_abort("the mode could not start");
		if (lg_conn_count() == 0)
			lg_finish();
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	if (!lg.finished)
		lg_finish();
	/* Anything still open (a mode's forgotten handle) is closed here so
	 * that the loop can be closed and the sanitizer build stays clean. */
	uv_walk(&loop, walk_close, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	report();
	uv_loop_close(&loop);

	if (lg.mode->cleanup != NULL)
		lg.mode->cleanup();
	for (k = 0; k < nstats; k++)
		free(stats[k]);
	for (k = 0; k < nerror_samples; k++)
		free(error_samples[k]);
	free_names(lg.users, lg.o.users);
	free_names(lg.rcpts, lg.o.users);
	return lg.fatal || (lg.logins_ok == 0 && lg.errors > 0) ? 1 : 0;
}
