"""
test_imap_quota.py - the read side of QUOTA (RFC 9208), STATUS=SIZE (RFC
8438), APPENDLIMIT (RFC 7889) and LIST-STATUS (RFC 5819) with imaplib:
quota numbers after LMTP deliveries and an expunge, a user without limits,
SETQUOTA refused, STATUS SIZE against RFC822.SIZE, the append limit in
CAPABILITY and STATUS and enforced, LIST RETURN (STATUS ...).
"""

import imaplib
import re

import pytest

from conftest import lmtp_send


def imap_login(daemon, user="alice"):
    return daemon.imap(user, daemon.password(user))


def deliver(daemon, n, rcpt="alice@example.com", pad=0):
    with daemon.lmtp() as l:
        for i in range(1, n + 1):
            msg = ("Subject: message %d\r\nFrom: s@example.net\r\n\r\nbody %d\r\n%s"
                   % (i, i, "x" * pad + "\r\n" if pad else "")).encode()
            _, _, data = lmtp_send(l, "s@example.net", [rcpt], msg)
            assert data[rcpt][0] == 250, data


def sizes(c):
    """RFC822.SIZE of every message of the selected mailbox."""
    typ, data = c.fetch("1:*", "(RFC822.SIZE)")
    assert typ == "OK", data
    return [int(re.search(rb"RFC822\.SIZE (\d+)", d).group(1)) for d in data]


def kib(n):
    return (n + 1023) // 1024


def set_quota(daemon, *args):
    r = daemon.cli("user", "quota", "alice", *args)
    assert r.returncode == 0, r.stderr


def test_capabilities(daemon):
    c = imap_login(daemon)
    typ, data = c.capability()
    caps = data[0].split()
    for cap in (b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE", b"STATUS=SIZE",
                b"LIST-STATUS"):
        assert cap in caps, caps
    assert any(x.startswith(b"APPENDLIMIT=") for x in caps), caps
    c.logout()


def test_getquotaroot_after_delivery_and_expunge(daemon):
    set_quota(daemon, "--bytes", "10K", "--messages", "5")
    deliver(daemon, 3, pad=700)
    c = imap_login(daemon)
    c.select("INBOX")
    sz = sizes(c)
    assert len(sz) == 3
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK", data
    roots, quotas = data
    assert roots == [b'INBOX ""'], roots
    assert quotas == [b'"" (STORAGE %d 10 MESSAGE 3 5)' % kib(sum(sz))], quotas

    typ, data = c.getquota('""')
    assert typ == "OK" and data == [b'"" (STORAGE %d 10 MESSAGE 3 5)' % kib(sum(sz))], data

    c.store("1", "+FLAGS", "\\Deleted")
    c.expunge()
    typ, data = c.getquota('""')
    assert data == [b'"" (STORAGE %d 10 MESSAGE 2 5)' % kib(sum(sz[1:]))], data
    c.logout()


def test_no_limit_user_has_empty_resource_list(daemon):
    deliver(daemon, 1)
    c = imap_login(daemon)
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK", data
    assert data[1] == [b'"" ()'], data
    typ, data = c.getquota('""')
    assert data == [b'"" ()'], data
    c.logout()


def test_only_limited_resources_listed(daemon):
    set_quota(daemon, "--messages", "7")
    c = imap_login(daemon)
    typ, data = c.getquota('""')
    assert data == [b'"" (MESSAGE 0 7)'], data
    c.logout()


def test_quota_errors(daemon):
    c = imap_login(daemon)
    typ, data = c.getquota("other")
    assert typ == "NO", data
    typ, data = c.getquotaroot("NoSuchBox")
    # imaplib hands a failed GETQUOTAROOT's text back inside lists.
    assert typ == "NO" and "[NONEXISTENT]" in str(data), data
    typ, data = c.setquota('""', "(STORAGE 100)")
    assert typ == "NO" and b"[NOPERM]" in data[0], data
    c.logout()


def test_status_size(daemon):
    deliver(daemon, 4, pad=300)
    c = imap_login(daemon)
    c.select("INBOX", readonly=True)
    total = sum(sizes(c))
    typ, data = c.status("INBOX", "(SIZE MESSAGES)")
    assert typ == "OK", data
    assert b"SIZE %d" % total in data[0] and b"MESSAGES 4" in data[0], data
    typ, data = c.status("Trash", "(SIZE)")
    assert b"SIZE 0" in data[0], data
    c.logout()


def test_appendlimit(daemon_factory):
    d = daemon_factory(lmtp={"max_message_size": 4096})
    c = imap_login(d)
    typ, data = c.capability()
    assert b"APPENDLIMIT=4096" in data[0].split(), data
    typ, data = c.status("INBOX", "(APPENDLIMIT)")
    assert typ == "OK" and b"APPENDLIMIT 4096" in data[0], data
    small = b"Subject: small\r\n\r\nhi\r\n"
    typ, data = c.append("INBOX", None, None, small)
    assert typ == "OK", data
    big = b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 100
    try:
        typ, data = c.append("INBOX", None, None, big)
    except imaplib.IMAP4.error as e:
        typ, data = "BAD", [str(e).encode()]
    assert typ != "OK", data
    c = imap_login(d)
    typ, data = c.status("INBOX", "(MESSAGES)")
    assert b"MESSAGES 1" in data[0], data
    c.logout()


def test_list_return_status(daemon):
    deliver(daemon, 2)
    c = imap_login(daemon)
    c.create("Work")
    c.select("INBOX")
    c.store("1", "+FLAGS", "\\Seen")
    c.close()
    c.untagged_responses.clear()
    typ, data = c._simple_command("LIST", '""', "*", "RETURN", "(STATUS (MESSAGES UNSEEN))")
    assert typ == "OK", data
    lists = c.untagged_responses.pop("LIST", [])
    statuses = c.untagged_responses.pop("STATUS", [])
    assert len(lists) == len(statuses) and len(lists) >= 2, (lists, statuses)
    got = {}
    for s in statuses:
        m = re.match(rb'"?([^"(]+?)"? \(MESSAGES (\d+) UNSEEN (\d+)\)', s)
        assert m, s
        got[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    assert got[b"INBOX"] == (2, 1), got
    assert got[b"Work"] == (0, 0), got
    c.logout()


def test_list_status_follows_each_list_line(daemon):
    """RFC 5819 §2: each STATUS comes right after its mailbox's LIST."""
    import socket
    s = socket.create_connection(("127.0.0.1", daemon.imap_port))
    f = s.makefile("rwb")
    f.readline()
    f.write(b'a LOGIN alice "%s"\r\n' % daemon.password("alice").encode())
    f.write(b'b LIST "" "%" RETURN (STATUS (SIZE))\r\n')
    f.flush()
    lines = []
    while True:
        line = f.readline()
        assert line, lines
        if line.startswith(b"b "):
            assert line.startswith(b"b OK"), line
            break
        if line.startswith(b"* LIST") or line.startswith(b"* STATUS"):
            lines.append(line)
    assert len(lines) % 2 == 0 and lines, lines
    for i in range(0, len(lines), 2):
        assert lines[i].startswith(b"* LIST") and lines[i + 1].startswith(b"* STATUS"), lines
        name = lines[i].rstrip(b"\r\n").split(b'"/" ', 1)[1]
        assert lines[i + 1].startswith(b"* STATUS " + name + b" (SIZE "), (lines[i], lines[i + 1])
    f.write(b"c LOGOUT\r\n")
    f.flush()
    s.close()
