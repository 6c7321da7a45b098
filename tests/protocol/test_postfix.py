"""
Postfix delivering to onebox: smtp-source -L (Postfix's LMTP test client)
over TCP and the unix socket, and a private Postfix instance relaying mail
to onebox with its lmtp: transport.  What arrives is read back over POP3.
Skipped when Debian's postfix package is not installed.
"""

import os
import pwd
import re
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import free_ports, make_body

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


MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.test.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.com
relay_transport = {transport}
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
notify_classes =
lmtp_line_length_limit = 0
smtputf8_enable = no
biff = no
"""

# Only what the test needs: smtpd on a loopback port, the queue manager,
# the lmtp client; no chroot.
MASTER_CF = """\
127.0.0.1:{smtp_port} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


@pytest.fixture(params=["inet", "unix"])
def postfix(request, daemon, workdir):
    """A private Postfix instance (its own config and queue folders) that
    relays example.com to the daemon with its lmtp: transport, over TCP or
    the daemon's unix socket (Postfix's lmtp client runs as user postfix)."""
    if os.geteuid() != 0 or not os.access("/usr/sbin/postfix", os.X_OK):
        pytest.skip("a private Postfix instance needs root and /usr/sbin/postfix")
    try:
        pw = pwd.getpwnam("postfix")
    except KeyError:
        pytest.skip("no postfix user")
    d = workdir / "postfix"
    (d / "queue").mkdir(parents=True)
    (d / "data").mkdir()
    os.chown(d / "data", pw.pw_uid, pw.pw_gid)
    smtp_port = free_ports(1)[0]
    transport = ("lmtp:inet:127.0.0.1:%d" % daemon.lmtp_port if request.param == "inet"
                 else "lmtp:unix:%s" % daemon.lmtp_socket)
    (d / "main.cf").write_text(MAIN_CF.format(dir=d, transport=transport))
    (d / "master.cf").write_text(MASTER_CF.format(smtp_port=smtp_port))
    r = subprocess.run(["/usr/sbin/postfix", "-c", str(d), "start"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    log = d / "maillog"
    assert r.returncode == 0, (r.stdout, log.read_text() if log.exists() else "")
    try:
        for _ in range(100):       # bounded wait for smtpd's port
            try:
                socket.create_connection(("127.0.0.1", smtp_port), timeout=2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield {"dir": d, "port": smtp_port,
               "relay": ("127.0.0.1[127.0.0.1]:%d" % daemon.lmtp_port if request.param == "inet"
                         else str(daemon.lmtp_socket))}
    finally:
        subprocess.run(["/usr/sbin/postfix", "-c", str(d), "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def body_of(m):
    return m[m.index(b"\r\n\r\n") + 4:]


def test_postfix_lmtp_transport(daemon, postfix):
    msgs = [
        ("alice@example.com", b"Subject: plain\r\n\r\nhello from postfix\r\n"),
        ("bob@example.com", b"Subject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\nend\r\n"),
        ("alice+lists@example.com", b"Subject: 8 bit\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: 8bit\r\n\r\n" + "Grüße, ça va\r\n".encode() * 10),
        ("bob@example.com", b"Subject: large\r\n\r\n" + make_body(2 << 20, seed=3, line_max=900)),
    ]
    s = smtplib.SMTP("127.0.0.1", postfix["port"], timeout=60)
    for rcpt, m in msgs:
        refused = s.sendmail("sender@example.org", [rcpt], m, mail_options=["BODY=8BITMIME"])
        assert refused == {}
    # Two recipients in one transaction, and one onebox does not know:
    # Postfix must see a 250 for the first and a 550 5.1.1 for the second.
    both = b"Subject: two and a stranger\r\n\r\nfor both\r\n"
    assert s.sendmail("", ["alice@example.com", "bob@example.com", "nobody@example.com"], both) == {}
    s.quit()

    want = {"alice": [msgs[0][1], msgs[2][1], both], "bob": [msgs[1][1], msgs[3][1], both]}
    got = {}
    for _ in range(600):           # bounded wait: Postfix delivers in the background
        got = {u: daemon.messages(u) for u in want}
        if all(len(got[u]) >= len(want[u]) for u in want):
            break
        time.sleep(0.1)
    log = (postfix["dir"] / "maillog").read_text(errors="replace") \
        if (postfix["dir"] / "maillog").exists() else ""
    for u in want:
        assert len(got[u]) == len(want[u]), (u, len(got[u]), log[-3000:])
        # Postfix adds trace headers; the bodies must arrive unchanged, in order.
        by_subject = {}
        for m in got[u]:
            subject = [l for l in m.split(b"\r\n") if l.startswith(b"Subject:")][0]
            by_subject[subject] = m
        for w in want[u]:
            subject = [l for l in w.split(b"\r\n") if l.startswith(b"Subject:")][0]
            assert body_of(by_subject[subject]) == body_of(w), (u, subject)
    assert re.search(r"to=<nobody@example\.com>.*status=bounced.*5\.1\.1", log), log[-3000:]
    assert not re.search(r"status=deferred", log), log[-3000:]
    sent = [l for l in log.splitlines() if "status=sent" in l]
    assert len(sent) == 6 and all(postfix["relay"] in l for l in sent), sent
