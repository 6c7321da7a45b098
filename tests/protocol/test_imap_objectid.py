"""
test_imap_objectid.py - SAVEDATE (RFC 8514) and OBJECTID (RFC 8474) with
imaplib: the capabilities, FETCH SAVEDATE, MAILBOXID in SELECT, STATUS and
CREATE (distinct per mailbox, new after DELETE and CREATE of the same name),
EMAILID kept across COPY and MOVE and distinct per message, THREADID NIL.
"""

import email.utils
import re
import time

from conftest import lmtp_send

ID_RE = rb"[A-Za-z0-9_-]{1,255}"


def imap_login(daemon, user="alice"):
    return daemon.imap(user, daemon.password(user))


def deliver(daemon, n, rcpt="alice@example.com"):
    with daemon.lmtp() as l:
        for i in range(1, n + 1):
            msg = ("Subject: message %d\r\nFrom: s@example.net\r\n\r\nbody %d\r\n"
                   % (i, i)).encode()
            _, _, data = lmtp_send(l, "s@example.net", [rcpt], msg)
            assert data[rcpt][0] == 250, data


def select_mailboxid(c, name):
    typ, data = c.select(name)
    assert typ == "OK", data
    typ, data = c.response("MAILBOXID")
    assert data and data[0] is not None, "no MAILBOXID in SELECT"
    m = re.fullmatch(rb"\((" + ID_RE + rb")\)", data[0])
    assert m, data
    return m.group(1)


def status_mailboxid(c, name):
    typ, data = c.status(name, "(MAILBOXID MESSAGES)")
    assert typ == "OK", data
    m = re.search(rb"MAILBOXID \((" + ID_RE + rb")\)", data[0])
    assert m, data
    return m.group(1)


def create_mailboxid(c, name):
    typ, data = c.create(name)
    assert typ == "OK", data
    m = re.search(rb"\[MAILBOXID \((" + ID_RE + rb")\)\]", data[0])
    assert m, data
    return m.group(1)


def emailids(c):
    """EMAILID of every message of the selected mailbox, in order."""
    typ, data = c.fetch("1:*", "(EMAILID THREADID)")
    assert typ == "OK", data
    out = []
    for d in data:
        assert re.search(rb"THREADID NIL", d), d
        m = re.search(rb"EMAILID \((" + ID_RE + rb")\)", d)
        assert m, d
        out.append(m.group(1))
    return out


def test_capabilities(daemon):
    c = imap_login(daemon)
    caps = c.capability()[1][0].split()
    assert b"SAVEDATE" in caps and b"OBJECTID" in caps, caps
    c.logout()


def test_fetch_savedate(daemon):
    before = time.time()
    deliver(daemon, 1)
    c = imap_login(daemon)
    c.select("INBOX")
    typ, data = c.fetch("1", "(SAVEDATE INTERNALDATE)")
    assert typ == "OK", data
    m = re.search(rb'SAVEDATE "([^"]+)"', data[0])
    assert m, data
    saved = email.utils.mktime_tz(email.utils.parsedate_tz(
        m.group(1).decode().replace("-", " ", 2)))
    assert before - 5 <= saved <= time.time() + 5, (before, saved)
    typ, data = c.search(None, "SAVEDSINCE", time.strftime("%d-%b-%Y", time.gmtime(saved - 86400)))
    assert typ == "OK" and data[0].split() == [b"1"], data
    c.logout()


def test_mailboxid_select_status_create(daemon):
    c = imap_login(daemon)
    inbox = select_mailboxid(c, "INBOX")
    assert status_mailboxid(c, "INBOX") == inbox
    created = create_mailboxid(c, "Work")
    assert created != inbox
    assert status_mailboxid(c, "Work") == created
    assert select_mailboxid(c, "Work") == created
    other = create_mailboxid(c, "Play")
    assert other not in (inbox, created)
    c.select("INBOX")
    assert c.delete("Work")[0] == "OK"
    again = create_mailboxid(c, "Work")
    assert again not in (inbox, created, other)
    assert status_mailboxid(c, "Work") == again
    c.logout()


def test_emailid_copy_move_threadid(daemon):
    deliver(daemon, 2)
    c = imap_login(daemon)
    for name in ("Copied", "Moved"):
        assert c.create(name)[0] == "OK"
    c.select("INBOX")
    ids = emailids(c)
    assert len(ids) == 2 and ids[0] != ids[1], ids
    assert c.copy("1", "Copied")[0] == "OK"
    typ, data = c._simple_command("MOVE", "2", "Moved")
    assert typ == "OK", data
    c.select("Copied")
    assert emailids(c) == [ids[0]]
    c.select("Moved")
    assert emailids(c) == [ids[1]]
    c.select("INBOX")
    assert emailids(c) == [ids[0]]
    c.logout()
