/*
 * imap_cmd_quota.c - the read side of QUOTA (RFC 9208): GETQUOTAROOT,
 * GETQUOTA, and SETQUOTA, which is refused.
 *
 * Each user has one quota root, "", over all of their mailboxes, with the
 * resources STORAGE and MESSAGE.  The numbers are the user record's
 * counters, kept by the store as messages come and go (store_user_get), so
 * answering costs one lookup.  Limits are set by the administrator with
 * `onebox user quota`, never over IMAP.
 */
#include <stdint.h>
#include <string.h>

#include "protocols/imap/imap_int.h"

/* RFC 9208 §5.1: STORAGE is in units of 1024 octets. */
static uint64_t quota_kib(uint64_t bytes)
{
	return bytes / 1024 + (bytes % 1024 != 0);
}

/* Append '* QUOTA "" (...)' for U: only the resources that have a limit
 * (RFC 9208 §5.1: a resource without one is not listed). */
static void quota_write(struct imap_session *s, const struct store_user *u)
{
	struct imap_wbuf *w = &s->out;
	const char *sep = "";

	imap_write_str(w, "* QUOTA \"\" (");
	if (u->quota_bytes) {
		imap_write_str(w, "STORAGE ");
		imap_write_u64(w, quota_kib(u->used_bytes));
		imap_write_byte(w, ' ');
		imap_write_u64(w, quota_kib(u->quota_bytes));
		sep = " ";
	}
	if (u->quota_messages) {
		imap_write_str(w, sep);
		imap_write_str(w, "MESSAGE ");
		imap_write_u64(w, u->used_messages);
		imap_write_byte(w, ' ');
		imap_write_u64(w, u->quota_messages);
	}
	imap_write_str(w, ")\r\n");
}

/* Read the session's user record and, when MAILBOX is non-NULL, check that
 * the mailbox exists; then write the QUOTAROOT (if MAILBOX) and QUOTA
 * lines.  A STORE_* status; nothing is written unless STORE_OK. */
static int quota_report(struct imap_session *s, const struct imap_str *mailbox)
{
	store_txn *t = store_read_begin(conn_store(s->c));
	struct store_user u;
	struct store_mailbox mb;
	int rc;

	if (!t)
		return STORE_TEMPFAIL;
	rc = store_user_get(t, s->user, &u);
	if (rc == STORE_OK && mailbox)
		rc = store_mailbox_get(t, s->user_id, mailbox->s, &mb);
	if (rc == STORE_OK) {
		if (mailbox) {
			imap_write_str(&s->out, "* QUOTAROOT ");
			imap_write_mailbox(&s->out, mailbox->s, mailbox->len, imap_write_flags(s));
			imap_write_str(&s->out, " \"\"\r\n");
		}
		quota_write(s, &u);
	}
	store_read_end(t);
	return rc;
}

static void quota_no(struct imap_session *s, int rc, const char *what)
{
	if (rc == STORE_NOTFOUND)
		imap_no(s, "NONEXISTENT", "%s: mailbox does not exist", what);
	else
		imap_no(s, "UNAVAILABLE", "%s: cannot read the store, try later", what);
}

/* GETQUOTAROOT mailbox (RFC 9208 §4.3). */
void imap_cmd_getquotaroot(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_str name;
	int rc;

	if (imap_parse_sp(cmd) || imap_parse_mailbox(cmd, &name) || imap_parse_end(cmd)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	rc = quota_report(s, &name);
	if (rc != STORE_OK) {
		quota_no(s, rc, "GETQUOTAROOT");
		return;
	}
	imap_ok(s, NULL, "GETQUOTAROOT completed");
}

/* GETQUOTA root (RFC 9208 §4.2): "" is the only root there is. */
void imap_cmd_getquota(struct imap_session *s, struct imap_cmd *cmd)
{
	struct imap_str root;
	int rc;

	if (imap_parse_sp(cmd) || imap_parse_astring(cmd, &root) || imap_parse_end(cmd)) {
		imap_bad(s, NULL, "%s", cmd->error);
		return;
	}
	if (root.len != 0) {
		imap_no(s, "NONEXISTENT", "No such quota root");
		return;
	}
	rc = quota_report(s, NULL);
	if (rc != STORE_OK) {
		quota_no(s, rc, "GETQUOTA");
		return;
	}
	imap_ok(s, NULL, "GETQUOTA completed");
}

/* SETQUOTA (RFC 9208 §4.1): limits belong to the administrator. */
void imap_cmd_setquota(struct imap_session *s, struct imap_cmd *cmd)
{
	(void)cmd;
	imap_no(s, "NOPERM", "Quotas are set by the administrator");
}
