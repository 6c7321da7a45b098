/*
 * loadgen_large.c - the large mode: one user (index 0) with a big mailbox
 * the harness prepared.  Each of --repeat rounds times, one step at a time:
 * LOGIN; SELECT INBOX; UID FETCH 1:* (FLAGS); then a second connection
 * (ENABLE QRESYNC, SELECT) notes UIDVALIDITY and HIGHESTMODSEQ and flags 10
 * unflagged messages spread over the mailbox; a fresh third connection
 * times ENABLE QRESYNC + SELECT INBOX (QRESYNC (uidvalidity modseq)) and
 * must be told of exactly those 10 UIDs (RFC 7162 §3.2.5.1); SEARCH HEADER
 * Subject and SEARCH BODY on the first; POP3 USER/PASS and UIDL; and the
 * second connection clears the 10 flags, so rounds repeat.  --duration
 * only sets the hard cap.
 */
#include "loadgen.h"

#include <stdlib.h>
#include <string.h>

#define CHANGES 10
#define QR_MAX 1024

enum large_step {
	L_C1_GREETING, L_C1_LOGIN, L_C1_SELECT, L_C1_FETCH,
	L_C2_GREETING, L_C2_LOGIN, L_C2_ENABLE, L_C2_SELECT, L_C2_STORE,
	L_C3_GREETING, L_C3_LOGIN, L_C3_ENABLE, L_C3_SELECT, L_C3_LOGOUT,
	L_C1_SEARCH_HEADER, L_C1_SEARCH_BODY,
	L_P_GREETING, L_P_USER, L_P_PASS, L_P_UIDL, L_P_QUIT,
	L_C2_UNDO, L_C2_LOGOUT, L_C1_LOGOUT, L_IDLE,
};

static const char *const step_names[] = {
	"greeting", "LOGIN", "SELECT", "UID FETCH",
	"second greeting", "second LOGIN", "second ENABLE", "second SELECT", "UID STORE",
	"third greeting", "third LOGIN", "ENABLE QRESYNC", "SELECT QRESYNC", "third LOGOUT",
	"SEARCH HEADER", "SEARCH BODY",
	"POP3 greeting", "USER", "PASS", "UIDL", "QUIT",
	"UID STORE (undo)", "second LOGOUT", "LOGOUT", "idle",
};

static lg_conn c1, c2, c3, cp;
static enum large_step step = L_IDLE;
static int round_no;
static bool round_failed;
static bool ever_ok;

/* What the round learnt. */
static uint32_t *uids;          /* from UID FETCH 1:* (FLAGS), in order */
static uint8_t *flagged;
static size_t nuids, cap_uids;
static uint64_t exists, uidvalidity, highestmodseq;
static uint32_t chosen[CHANGES];
static int nchosen;
static char chosen_set[CHANGES * 12];
static uint32_t qr_uids[QR_MAX];
static int nqr;
static uint64_t qresync_changes;
static uint64_t search_hits[2], uidl_lines;
static bool counting_search, search_in_num;
static int search_slot;
static uint64_t t_mark;
static bool in_listing;         /* inside the UIDL listing */
static int rounds_ok;

static struct {
	lg_stat *login, *select, *fetch, *qresync, *search_header, *search_body, *pop3_login,
		*uidl;
} ls;

static void next_round(void);

/* ------------------------------------------------------------ helpers */

static void send_login(lg_conn *c, lg_stat *op)
{
	char qu[512], qp[512];

	lg_imap_cmd(c, op, "LOGIN %s %s", lg_imap_quote(qu, sizeof qu, lg.users[0]),
	            lg_imap_quote(qp, sizeof qp, lg.o.password));
}

static bool add_uid(uint32_t uid, bool is_flagged)
{
	if (nuids == cap_uids) {
		size_t ncap = cap_uids ? cap_uids * 2 : 65536;
		uint32_t *nu = realloc(uids, ncap * sizeof *nu);
		uint8_t *nf;

		if (nu == NULL)
			return false;
		uids = nu;
		nf = realloc(flagged, ncap);
		if (nf == NULL)
			return false;
		flagged = nf;
		cap_uids = ncap;
	}
	uids[nuids] = uid;
	flagged[nuids] = is_flagged;
	nuids++;
	return true;
}

/* Up to CHANGES unflagged UIDs spread evenly over the mailbox. */
static void choose_uids(void)
{
	size_t i, j, k, o = 0;
	int t;

	nchosen = 0;
	for (t = 0; t < CHANGES && nuids > 0; t++) {
		size_t start = (size_t)t * nuids / CHANGES + nuids / (2 * CHANGES);

		for (k = 0; k < nuids; k++) {
			bool dup = false;

			j = (start + k) % nuids;
			if (flagged[j])
				continue;
			for (i = 0; i < (size_t)nchosen; i++)
				dup = dup || chosen[i] == uids[j];
			if (dup)
				continue;
			chosen[nchosen++] = uids[j];
			break;
		}
	}
	chosen_set[0] = '\0';
	for (t = 0; t < nchosen; t++)
		o += (size_t)snprintf(chosen_set + o, sizeof chosen_set - o, "%s%u",
		                      t ? "," : "", chosen[t]);
}

static bool is_chosen(uint32_t uid)
{
	int i;

	for (i = 0; i < nchosen; i++)
		if (chosen[i] == uid)
			return true;
	return false;
}

/* Count the numbers of "* SEARCH n n n", which may span fragments. */
static void count_search(const char *s, size_t n, unsigned flags)
{
	size_t i = 0;

	if (flags & LG_FIRST) {
		counting_search = n >= 8 && strncasecmp(s, "* SEARCH", 8) == 0;
		search_in_num = false;
		i = 8;
	}
	if (!counting_search)
		return;
	for (; i < n; i++) {
		bool digit = s[i] >= '0' && s[i] <= '9';

		if (digit && !search_in_num)
			search_hits[search_slot]++;
		search_in_num = digit;
	}
	if (flags & LG_END)
		counting_search = false;
}

/* --------------------------------------------------------------- steps */

static void close_all_round(void)
{
	lg_conn *all[] = { &c1, &c2, &c3, &cp };
	size_t i;

	for (i = 0; i < 4; i++)
		if (all[i]->open && !all[i]->closing)
			lg_conn_close(all[i]);
}

/* The tagged OK (IMAP) or +OK (POP3) of the current step arrived. */
static void advance(lg_conn *c)
{
	uint64_t now = lg_now();

	switch (step) {
	case L_C1_GREETING:
		send_login(&c1, ls.login);
		step = L_C1_LOGIN;
		break;
	case L_C1_LOGIN:
		if (!ever_ok) {
			ever_ok = true;
			lg.logins_ok++;
		}
		exists = 0;
		lg_imap_cmd(&c1, ls.select, "SELECT INBOX");
		step = L_C1_SELECT;
		break;
	case L_C1_SELECT:
		nuids = 0;
		if (exists == 0) {
			/* Nothing to fetch: "1:*" would be an error. */
			choose_uids();
			step = L_C2_GREETING;
			lg_conn_connect(&c2, lg.o.port);
			break;
		}
		lg_imap_cmd(&c1, ls.fetch, "UID FETCH 1:* (FLAGS)");
		step = L_C1_FETCH;
		break;
	case L_C1_FETCH:
		choose_uids();
		step = L_C2_GREETING;
		lg_conn_connect(&c2, lg.o.port);
		break;
	case L_C2_GREETING:
		send_login(&c2, NULL);
		step = L_C2_LOGIN;
		break;
	case L_C2_LOGIN:
		lg_imap_cmd(&c2, NULL, "ENABLE QRESYNC");
		step = L_C2_ENABLE;
		break;
	case L_C2_ENABLE:
		uidvalidity = highestmodseq = 0;
		lg_imap_cmd(&c2, NULL, "SELECT INBOX");
		step = L_C2_SELECT;
		break;
	case L_C2_SELECT:
		if (uidvalidity == 0 || highestmodseq == 0) {
			lg_conn_fail(&c2, "no UIDVALIDITY or HIGHESTMODSEQ");
			return;
		}
		step = L_C2_STORE;
		if (nchosen == 0) {
			lg_error("large: no unflagged message to change");
			advance(&c2);
			return;
		}
		lg_imap_cmd(&c2, NULL, "UID STORE %s +FLAGS.SILENT (\\Flagged)", chosen_set);
		break;
	case L_C2_STORE:
		step = L_C3_GREETING;
		lg_conn_connect(&c3, lg.o.port);
		break;
	case L_C3_GREETING:
		send_login(&c3, NULL);
		step = L_C3_LOGIN;
		break;
	case L_C3_LOGIN:
		t_mark = now;
		lg_imap_cmd(&c3, NULL, "ENABLE QRESYNC");
		step = L_C3_ENABLE;
		break;
	case L_C3_ENABLE:
		nqr = 0;
		qresync_changes = 0;
		lg_imap_cmd(&c3, NULL, "SELECT INBOX (QRESYNC (%llu %llu))",
		            (unsigned long long)uidvalidity, (unsigned long long)highestmodseq);
		step = L_C3_SELECT;
		break;
	case L_C3_SELECT: {
		int i, match = 0;

		lg_stat_add(ls.qresync, now - t_mark);
		qresync_changes = (uint64_t)nqr;
		for (i = 0; i < nqr && i < QR_MAX; i++)
			match += is_chosen(qr_uids[i]);
		if (nqr != nchosen || match != nchosen)
			lg_error("large: QRESYNC reported %d changed UIDs (%d of the %d changed)",
			         nqr, match, nchosen);
		c3.eof_ok = true;
		lg_imap_cmd(&c3, NULL, "LOGOUT");
		step = L_C3_LOGOUT;
		break;
	}
	case L_C3_LOGOUT:
		/* Goes on in large_closed, once the socket is closed. */
		lg_conn_close(&c3);
		break;
	case L_C1_SEARCH_HEADER:
		search_slot = 1;
		lg_imap_cmd(&c1, ls.search_body, "SEARCH BODY %s", lg.o.search_word);
		step = L_C1_SEARCH_BODY;
		break;
	case L_C1_SEARCH_BODY:
		uidl_lines = 0;
		step = L_P_GREETING;
		lg_conn_connect(&cp, lg.o.pop3_port);
		break;
	case L_P_GREETING:
		in_listing = false;
		t_mark = now;
		lg_conn_cmd(&cp, NULL, "USER %s", lg.users[0]);
		step = L_P_USER;
		break;
	case L_P_USER:
		lg_conn_cmd(&cp, NULL, "PASS %s", lg.o.password);
		step = L_P_PASS;
		break;
	case L_P_PASS:
		lg_stat_add(ls.pop3_login, now - t_mark);
		lg_conn_cmd(&cp, ls.uidl, "UIDL");
		step = L_P_UIDL;
		break;
	case L_P_UIDL:
		cp.eof_ok = true;
		lg_conn_cmd(&cp, NULL, "QUIT");
		step = L_P_QUIT;
		break;
	case L_P_QUIT:
		lg_conn_close(&cp);
		break;
	case L_C2_UNDO:
		c2.eof_ok = true;
		lg_imap_cmd(&c2, NULL, "LOGOUT");
		step = L_C2_LOGOUT;
		break;
	case L_C2_LOGOUT:
		lg_conn_close(&c2);
		break;
	case L_C1_LOGOUT:
		lg_conn_close(&c1);
		break;
	case L_IDLE:
		break;
	}
}

/* The steps that follow a planned close. */
static void after_close(lg_conn *c)
{
	if (c == &c3 && step == L_C3_LOGOUT) {
		search_slot = 0;
		search_hits[0] = search_hits[1] = 0;
		lg_imap_cmd(&c1, ls.search_header, "SEARCH HEADER Subject %s", lg.o.search_word);
		step = L_C1_SEARCH_HEADER;
	} else if (c == &cp && step == L_P_QUIT) {
		step = L_C2_UNDO;
		if (nchosen == 0) {
			advance(&c2);
			return;
		}
		lg_imap_cmd(&c2, NULL, "UID STORE %s -FLAGS.SILENT (\\Flagged)", chosen_set);
	} else if (c == &c2 && step == L_C2_LOGOUT) {
		c1.eof_ok = true;
		lg_imap_cmd(&c1, NULL, "LOGOUT");
		step = L_C1_LOGOUT;
	} else if (c == &c1 && step == L_C1_LOGOUT) {
		rounds_ok++;
		lg.messages++;
		next_round();
	}
}

static void large_line(lg_conn *c, const char *s, size_t n, unsigned flags)
{
	uint64_t num;
	int r;

	if (c == &c1 && (step == L_C1_SEARCH_HEADER || step == L_C1_SEARCH_BODY))
		count_search(s, n, flags);
	if (!(flags & LG_FIRST))
		return;

	if (c == &cp) {
		if (in_listing) {
			/* RFC 1939 §3: the listing ends with a line of one dot. */
			if ((flags & LG_END) && n == 1 && s[0] == '.') {
				in_listing = false;
				lg_conn_done(c);
				advance(c);
			} else {
				uidl_lines++;
			}
			return;
		}
		r = lg_pop3_status(s, n);
		if (r != 1) {
			lg_conn_fail(c, "%s", lg_excerpt(s, n));
			return;
		}
		if (step == L_P_UIDL) {
			/* The listing follows; its timer stops at the dot. */
			in_listing = true;
			return;
		}
		lg_conn_done(c);
		advance(c);
		return;
	}

	if (n >= 2 && s[0] == '*' && s[1] == ' ') {
		if ((c == &c1 && step == L_C1_GREETING) || (c == &c2 && step == L_C2_GREETING) ||
		    (c == &c3 && step == L_C3_GREETING)) {
			if (n < 4 || strncasecmp(s, "* OK", 4) != 0) {
				lg_conn_fail(c, "%s", lg_excerpt(s, n));
				return;
			}
			lg_conn_done(c);
			advance(c);
			return;
		}
		if (c == &c1 && step == L_C1_SELECT && lg_imap_untagged_num(s, n, "EXISTS", &num)) {
			exists = num;
		} else if (c == &c1 && step == L_C1_FETCH && lg_find_num(s, n, "UID ", &num)) {
			if (!add_uid((uint32_t)num, memmem(s, n, "\\Flagged", 8) != NULL)) {
				lg_conn_fail(c, "out of memory");
				return;
			}
		} else if (c == &c2 && step == L_C2_SELECT) {
			if (lg_find_num(s, n, "UIDVALIDITY ", &num))
				uidvalidity = num;
			if (lg_find_num(s, n, "HIGHESTMODSEQ ", &num))
				highestmodseq = num;
		} else if (c == &c3 && step == L_C3_SELECT && lg_find_num(s, n, "UID ", &num) &&
		           memmem(s, n, " FETCH ", 7) != NULL) {
			int i;
			bool seen = false;

			for (i = 0; i < nqr; i++)
				seen = seen || qr_uids[i] == (uint32_t)num;
			if (!seen && nqr < QR_MAX)
				qr_uids[nqr++] = (uint32_t)num;
		}
		return;
	}
	r = lg_imap_tagged(c, s, n);
	if (r == LG_NOT_TAGGED)
		return;
	if (r != LG_OK) {
		lg_conn_fail(c, "%s", lg_excerpt(s, n));
		return;
	}
	lg_conn_done(c);
	advance(c);
}

static void large_closed(lg_conn *c, const char *why)
{
	if (why != NULL) {
		if (!lg.stopping)
			lg_error("large round %d, %s: %s", round_no, step_names[step], why);
		if (!ever_ok)
			lg_first_failure();
		round_failed = true;
		close_all_round();
	}
	if (round_failed || lg.stopping) {
		if (!c1.open && !c2.open && !c3.open && !cp.open) {
			round_failed = false;
			step = L_IDLE;
			next_round();
		}
		return;
	}
	after_close(c);
}

static void next_round(void)
{
	if (lg.stopping || round_no >= lg.o.repeat) {
		step = L_IDLE;
		lg_finish();
		return;
	}
	round_no++;
	step = L_C1_GREETING;
	lg_conn_connect(&c1, lg.o.port);
}

/* ------------------------------------------------------------ the mode */

static int large_start(void)
{
	ls.login = lg_stat_new("LOGIN", true);
	ls.select = lg_stat_new("SELECT", true);
	ls.fetch = lg_stat_new("UID_FETCH_FLAGS", true);
	ls.qresync = lg_stat_new("QRESYNC", false);
	ls.search_header = lg_stat_new("SEARCH_HEADER", true);
	ls.search_body = lg_stat_new("SEARCH_BODY", true);
	ls.pop3_login = lg_stat_new("POP3_LOGIN", false);
	ls.uidl = lg_stat_new("UIDL", true);

	if (lg_conn_init(&c1, 65536, true, large_line, large_closed, NULL, 0) != 0 ||
	    lg_conn_init(&c2, 16384, true, large_line, large_closed, NULL, 0) != 0 ||
	    lg_conn_init(&c3, 16384, true, large_line, large_closed, NULL, 0) != 0 ||
	    lg_conn_init(&cp, 65536, false, large_line, large_closed, NULL, 0) != 0)
		return -1;
	next_round();
	return 0;
}

static void large_tick(uint64_t now)
{
}

static void large_stop(void)
{
	lg_conn_close_all();
	if (!c1.open && !c2.open && !c3.open && !cp.open)
		lg_finish();
}

static void large_report(FILE *out)
{
	fprintf(out, ", \"exists\": %llu, \"uids_fetched\": %zu, \"qresync_changes\": %llu, "
	        "\"search_header_hits\": %llu, \"search_body_hits\": %llu, \"uidl_lines\": %llu, "
	        "\"rounds\": %d",
	        (unsigned long long)exists, nuids, (unsigned long long)qresync_changes,
	        (unsigned long long)search_hits[0], (unsigned long long)search_hits[1],
	        (unsigned long long)uidl_lines, rounds_ok);
}

static void large_cleanup(void)
{
	lg_conn_free(&c1);
	lg_conn_free(&c2);
	lg_conn_free(&c3);
	lg_conn_free(&cp);
	free(uids);
	free(flagged);
}

const struct lg_mode lg_mode_large = {
	.name = "large",
	.start = large_start,
	.tick = large_tick,
	.stop = large_stop,
	.report = large_report,
	.cleanup = large_cleanup,
};
