"""
test_ratelimit.py - limits.preauth_command_rate / preauth_command_burst.

Before login a connection may run `burst` commands at once and then `rate`
a second; the excess is not dropped but waits, its input paused.  After
login, and on LMTP always, there is no such limit.  No test asserts a
duration: the flood test counts how many answers arrived in a read window
against what the bucket could have allowed in that window (measured from
before the first byte was sent, so a slow machine only lowers the count),
and then that every command was answered.  The "no limit" tests use a rate
so low (1/s) that metering 200 commands would outlast the client timeout.
"""

import socket
import time

from conftest import CLIENT_TIMEOUT, Replies


def read_available(sock, until):
    """Octets received on SOCK until the monotonic time UNTIL."""
    data = b""
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return data
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data
        if not chunk:
            return data
        data += chunk


def read_until_count(sock, data, marker, count):
    """Read until DATA holds COUNT MARKERs (or the client timeout)."""
    sock.settimeout(CLIENT_TIMEOUT)
    for _ in range(100_000):
        if data.count(marker) >= count:
            return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


RATE, BURST = 50, 10
SLACK = 10    # a refill between our clock and the daemon's, rounding


def test_preauth_flood_is_slowed_not_dropped(daemon_factory):
    d = daemon_factory(limits={"preauth_command_rate": RATE, "preauth_command_burst": BURST})
    s = d.raw(d.imap_port)
    s.settimeout(CLIENT_TIMEOUT)
    greeting = s.recv(4096)
    assert greeting.startswith(b"* OK"), greeting
    n = 200
    flood = b"".join(b"n%d NOOP\r\n" % i for i in range(n))
    t0 = time.monotonic()
    s.sendall(flood)
    data = read_available(s, t0 + 0.5)
    elapsed = time.monotonic() - t0
    early = data.count(b" OK NOOP completed")
    allowed = BURST + RATE * elapsed + SLACK
    assert early <= allowed, (early, elapsed)
    # Slowed, never dropped: every command is answered, in order.
    data = read_until_count(s, data, b" OK NOOP completed", n)
    tags = [line.split(b" ")[0] for line in data.split(b"\r\n") if line]
    assert tags == [b"n%d" % i for i in range(n)]
    # Logging in ends the metering for this connection.
    s.sendall(b"l LOGIN alice %s\r\n" % d.password("alice").encode())
    data = read_until_count(s, b"", b"l OK", 1)
    assert b"l OK" in data, data
    s.close()
    assert "commands a second before login" in d.log_text()


def test_no_limit_after_login_or_on_lmtp(daemon_factory):
    d = daemon_factory(limits={"preauth_command_rate": 1, "preauth_command_burst": 5})
    n = 200

    # IMAP, logged in: all 200 answered (metered, they would need 195 s).
    m = d.imap("alice", d.password("alice"))
    m.sock.sendall(b"".join(b"a%d NOOP\r\n" % i for i in range(n)))
    data = read_until_count(m.sock, b"", b" OK NOOP completed", n)
    assert data.count(b" OK NOOP completed") == n
    m.sock.close()

    # POP3, logged in.
    p = d.pop3("bob", d.password("bob"))
    p.sock.sendall(b"NOOP\r\n" * n)
    data = read_until_count(p.sock, b"", b"+OK", n)
    assert data.count(b"+OK") == n
    p.sock.close()

    # LMTP has no login and is never metered.
    s = d.raw(d.lmtp_port)
    r = Replies(s)
    assert r.reply()[0] == 220
    s.sendall(b"LHLO client.example\r\n" + b"NOOP\r\n" * n)
    assert r.reply()[0] == 250
    for _ in range(n):
        assert r.reply()[0] == 250
    s.close()


def test_pop3_is_metered_before_login(daemon_factory):
    d = daemon_factory(limits={"preauth_command_rate": 2, "preauth_command_burst": 3})
    s = d.raw(d.pop3_port)
    s.settimeout(CLIENT_TIMEOUT)
    assert s.recv(4096).startswith(b"+OK")
    n = 9
    t0 = time.monotonic()
    s.sendall(b"NOOP\r\n" * n)
    data = read_available(s, t0 + 0.5)
    elapsed = time.monotonic() - t0
    early = data.count(b"\r\n")
    assert early <= 3 + 2 * elapsed + 1, (early, elapsed)
    data = read_until_count(s, data, b"\r\n", n)
    assert data.count(b"-ERR") == n, data
    s.close()


def test_rate_keys_are_checked(daemon_factory):
    d = daemon_factory(start=False, limits={"preauth_command_rate": 0,
                                            "preauth_command_burst": 1})
    r = d.cli("check")
    assert r.returncode == 0, r.stderr
    d.update_settings({"limits": {"preauth_command_burst": 0}})
    r = d.cli("check")
    assert r.returncode != 0
    assert b"preauth_command_burst" in r.stderr, r.stderr
