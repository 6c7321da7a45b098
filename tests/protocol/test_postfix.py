"""
Postfix's own LMTP client code (smtp-source -L, from Debian's postfix
package) delivers to onebox over TCP and the unix socket; the messages are
read back over POP3.  Skipped when smtp-source is not installed.
"""

import os
import subprocess

import pytest

SMTP_SOURCE = "/usr/sbin/smtp-source"

pytestmark = pytest.mark.skipif(not os.access(SMTP_SOURCE, os.X_OK),
                                reason="no %s (Debian package postfix)" % SMTP_SOURCE)


def smtp_source(*args):
    r = subprocess.run([SMTP_SOURCE, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r


def check_inbox(d, user, count, min_size):
    p = d.pop3(user, d.users[user])
    n, _ = p.stat()
    assert n == count, "%d messages arrived, %d sent" % (n, count)
    sizes = []
    for i in range(1, n + 1):
        resp, lines, _ = p.retr(i)
        m = b"".join(l + b"\r\n" for l in lines)
        assert b"\r\n\r\n" in m, m[:300]
        header = m[:m.index(b"\r\n\r\n")]
        assert b"From: " in header or b"from: " in header.lower(), header
        sizes.append(len(m))
    p.quit()
    assert min(sizes) >= min_size, sizes


def test_smtp_source_lmtp_tcp(daemon):
    # 4 parallel sessions, 20 messages of ~8 KB, several per connection (-d).
    smtp_source("-L", "-d", "-s", "4", "-m", "20", "-l", "8000", "-f", "sender@example.org",
                "-t", "alice@example.com", "-M", "client.example",
                "127.0.0.1:%d" % daemon.lmtp_port)
    check_inbox(daemon, "alice", 20, 8000)


def test_smtp_source_lmtp_unix_socket(daemon):
    smtp_source("-L", "-m", "5", "-l", "200000", "-f", "sender@example.org",
                "-t", "bob+detail@example.com", "unix:%s" % daemon.lmtp_socket)
    check_inbox(daemon, "bob", 5, 200000)
