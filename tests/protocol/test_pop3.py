"""
POP3 (RFC 1939, RFC 2449, RFC 2595, RFC 3206) with poplib and raw sockets:
byte-exact round trips from LMTP and `onebox deliver` over plain, STLS and
POP3S; STAT/LIST/UIDL/TOP; UIDL stability and form; DELE/RSET/QUIT in every
pop3.delete_mode; dropped sessions; lock_session; plaintext policy.
"""

import pathlib
import poplib
import re
import socket
import time

import pytest

from conftest import (HAVE_IPV6, crlf, list_map, lmtp_send, lmtp_stored, make_body,
                      retr_bytes, uidl_map)

CORPUS = pathlib.Path(__file__).parent / "corpus"


def msg(subject, body=b"hello\r\n"):
    return b"From: a@example.org\r\nSubject: " + subject.encode() + b"\r\n\r\n" + body


def lmtp_deliver(d, user, messages):
    """Deliver each of MESSAGES to USER over LMTP; return what the store
    must hold for each."""
    c = d.lmtp()
    out = []
    for m in messages:
        _, rr, data = lmtp_send(c, "s@example.org", [user + "@example.com"], m)
        assert data.get(user + "@example.com", (0,))[0] == 250, (rr, data)
        out.append(lmtp_stored(m))
    c.quit()
    return out


# Messages whose bytes must come back exactly (after CRLF normalisation).
SMALL_CORPUS = {
    "one_empty_line": b"",       # smtplib sends it as one empty line
    "small": msg("small"),
    "eight_bit": msg("8 bit", bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
                     + "Grüße — ünïcödé\r\n".encode("utf-8") + "Latin-1: caf\xe9\r\n".encode("latin-1")),
    "bare_lf": b"Subject: bare LF\n\nline one\nline two\n\nline four\r\n",
    "bare_cr": b"Subject: bare CR\r\n\r\nline one\rline two\r\n",
    "long_line": msg("100 KB line", b"L" * 100_000 + b"\r\nshort\r\n"),
    "dots": msg("dots", b".\r\n..\r\n...\r\n.leading\r\n..two leading\r\nend\r\n.\r\n"),
    "no_body": b"Subject: header only\r\n\r\n",
    "header_only_no_blank": b"Subject: no blank line\r\n",
    "binary_like": msg("binary-ish", make_body(300_000, seed=7, line_max=1000)),
}


def read_all(p):
    count, total = p.stat()
    got = [retr_bytes(p, i) for i in range(1, count + 1)]
    return count, total, got


@pytest.mark.parametrize("transport", ["plain", "stls", "pop3s"])
def test_round_trip_corpus(daemon, transport):
    want = lmtp_deliver(daemon, "alice", list(SMALL_CORPUS.values()))
    p = {"plain": daemon.pop3, "stls": daemon.pop3_stls, "pop3s": daemon.pop3s}[transport](
        "alice", "alice-pw")
    count, total, got = read_all(p)
    assert count == len(want)
    for name, w, g in zip(SMALL_CORPUS, want, got):
        assert g == w, "message %r differs (%d octets sent, %d back)" % (name, len(w), len(g))
    # RFC 1939: sizes are exact octet counts of what RETR sends.
    assert list_map(p) == {i + 1: len(w) for i, w in enumerate(want)}
    assert total == sum(len(w) for w in want)
    p.quit()


def test_round_trip_20mib_all_transports(daemon):
    body = make_body(20 << 20, seed=20)
    m = msg("20 MiB of 8-bit lines", body)
    want = lmtp_deliver(daemon, "bob", [m])[0]
    assert len(want) > 20 << 20
    for connect in (daemon.pop3, daemon.pop3_stls, daemon.pop3s):
        p = connect("bob", "bob-pw")
        assert list_map(p) == {1: len(want)}
        got = retr_bytes(p, 1)
        assert len(got) == len(want) and got == want, connect.__name__
        p.quit()


def test_empty_message_via_deliver(daemon):
    assert daemon.deliver("alice", b"") == 0
    p = daemon.pop3("alice", "alice-pw")
    assert p.stat() == (1, 0)
    assert list_map(p) == {1: 0}
    assert retr_bytes(p, 1) == b""
    p.quit()


def test_deliver_lf_file_is_stored_with_crlf(daemon):
    raw = (CORPUS / "mime-8bit.eml").read_bytes()
    assert b"\r\n" not in raw          # the fixture is a plain LF file
    assert daemon.deliver("alice", raw) == 0
    p = daemon.pop3("alice", "alice-pw")
    assert retr_bytes(p, 1) == crlf(raw)
    assert list_map(p) == {1: len(crlf(raw))}
    p.quit()


def test_retr_wire_format_is_dot_stuffed(daemon):
    """RFC 1939 §3: a line starting with '.' is sent with one more '.', and
    the response ends with CRLF.CRLF.  Read off the wire, not via poplib."""
    m = msg("wire", b".\r\n.x\r\n..y\r\nz.\r\n")
    stored = lmtp_deliver(daemon, "alice", [m])[0]
    c = daemon.conn(daemon.pop3_port)
    assert c.readline().startswith(b"+OK")
    c.send(b"USER alice\r\nPASS alice-pw\r\nRETR 1\r\n")
    assert c.readline().startswith(b"+OK")
    assert c.readline().startswith(b"+OK")
    first = c.readline()
    assert first.startswith(b"+OK"), first
    want = re.sub(rb"(?m)^\.", b"..", stored) + b".\r\n"
    got = c.read(len(want))
    assert got == want
    c.send(b"QUIT\r\n")
    assert c.readline().startswith(b"+OK")
    c.close()


def test_stat_list_uidl_top(daemon):
    msgs = [msg("one", b"b1 line1\r\nb1 line2\r\nb1 line3\r\n"),
            msg("two", b"x\r\n" * 10),
            msg("three")]
    want = lmtp_deliver(daemon, "alice", msgs)
    p = daemon.pop3("alice", "alice-pw")
    assert p.stat() == (3, sum(map(len, want)))
    assert list_map(p) == {1: len(want[0]), 2: len(want[1]), 3: len(want[2])}
    assert p.list(2) == b"+OK 2 %d" % len(want[1])
    uidls = uidl_map(p)
    assert sorted(uidls) == [1, 2, 3] and len(set(uidls.values())) == 3
    assert p.uidl(3) == b"+OK 3 " + uidls[3].encode()
    header = want[0][:want[0].index(b"\r\n\r\n") + 4]
    # TOP n 0: the header and the blank line after it, exactly.
    resp, lines, _ = p.top(1, 0)
    assert resp.startswith(b"+OK")
    assert b"".join(l + b"\r\n" for l in lines) == header
    resp, lines, _ = p.top(1, 2)
    assert b"".join(l + b"\r\n" for l in lines) == header + b"b1 line1\r\nb1 line2\r\n"
    resp, lines, _ = p.top(1, 100)   # more lines than the body has: all of it
    assert b"".join(l + b"\r\n" for l in lines) == want[0]
    for bad in (b"LIST 4", b"LIST 0", b"UIDL 4", b"RETR 4", b"TOP 4 0", b"RETR 0", b"DELE 9"):
        with pytest.raises(poplib.error_proto, match="-ERR"):
            p._shortcmd(bad.decode())
    assert p.noop().startswith(b"+OK")
    p.quit()


def dovecot_uidl(uid, uidvalidity):
    return "%08X%08X" % (uid, uidvalidity)


def uidvalidity_of(uidls):
    """The UIDVALIDITY in default (Dovecot) UIDLs: the second 8 hex digits,
    the same for every message of the mailbox."""
    vals = set()
    for u in uidls.values():
        assert re.fullmatch(r"[0-9A-F]{16}", u), u
        vals.add(int(u[8:], 16))
    assert len(vals) == 1, uidls
    return vals.pop()


def test_uidl_form_and_stability(daemon):
    lmtp_deliver(daemon, "alice", [msg("m%d" % i) for i in range(1, 4)])
    p = daemon.pop3("alice", "alice-pw")
    first = uidl_map(p)
    p.quit()
    uv = uidvalidity_of(first)
    assert uv != 0
    # First UID is 1, then 2, 3: the default form is %08X UID, %08X UIDVALIDITY.
    assert first == {i: dovecot_uidl(i, uv) for i in (1, 2, 3)}
    p = daemon.pop3("alice", "alice-pw")
    assert uidl_map(p) == first          # the next session
    p.quit()
    daemon.restart()
    p = daemon.pop3("alice", "alice-pw")
    assert uidl_map(p) == first          # and after a restart
    p.quit()
    # bob's INBOX has its own UIDs, also starting at 1.
    lmtp_deliver(daemon, "bob", [msg("for bob")])
    p = daemon.pop3("bob", "bob-pw")
    u = uidl_map(p)
    assert u[1][:8] == "00000001"
    p.quit()


@pytest.mark.parametrize("fmt,pattern", [
    ("cyrus", r"(?P<uv>[0-9]+)\.(?P<uid>[0-9]+)"),
    ("courier", r"(?P<uv>[0-9]+)-(?P<uid>[0-9]+)"),
    ("uw", r"(?P<uvh>[0-9a-f]{8})(?P<uidh>[0-9a-f]{8})"),
])
def test_uidl_formats_name_the_same_uids(daemon, fmt, pattern):
    """Switching pop3.uidl_format on the same store: each form carries the
    same UIDVALIDITY and UIDs as the default form (DESIGN §2)."""
    lmtp_deliver(daemon, "alice", [msg("m%d" % i) for i in range(1, 4)])
    p = daemon.pop3("alice", "alice-pw")
    dflt = uidl_map(p)
    p.quit()
    uv = uidvalidity_of(dflt)
    daemon.restart(pop3={"uidl_format": fmt})
    p = daemon.pop3("alice", "alice-pw")
    other = uidl_map(p)
    p.quit()
    for n, u in other.items():
        m = re.fullmatch(pattern, u)
        assert m, (fmt, u)
        g = m.groupdict()
        got_uv = int(g["uv"]) if "uv" in g else int(g["uvh"], 16)
        got_uid = int(g["uid"]) if "uid" in g else int(g["uidh"], 16)
        assert (got_uv, got_uid) == (uv, n), (fmt, u)
    daemon.restart(pop3={"uidl_format": "dovecot"})
    p = daemon.pop3("alice", "alice-pw")
    assert uidl_map(p) == dflt
    p.quit()


def test_dele_rset_restores(daemon):
    want = lmtp_deliver(daemon, "alice", [msg("m%d" % i) for i in range(1, 4)])
    p = daemon.pop3("alice", "alice-pw")
    uidls = uidl_map(p)
    assert p.dele(1).startswith(b"+OK")
    assert p.dele(3).startswith(b"+OK")
    assert p.stat() == (1, len(want[1]))
    assert p.rset().startswith(b"+OK")
    assert p.stat() == (3, sum(map(len, want)))
    assert uidl_map(p) == uidls
    assert retr_bytes(p, 1) == want[0]
    p.quit()
    p = daemon.pop3("alice", "alice-pw")
    assert uidl_map(p) == uidls
    p.quit()


def test_deleted_message_in_session(daemon):
    want = lmtp_deliver(daemon, "alice", [msg("m%d" % i) for i in range(1, 4)])
    p = daemon.pop3("alice", "alice-pw")
    assert p.dele(2).startswith(b"+OK")
    # RFC 1939 §5: a message marked deleted may not be used; STAT and LIST
    # leave it out; numbers of the others do not change.
    assert p.stat() == (2, len(want[0]) + len(want[2]))
    assert list_map(p) == {1: len(want[0]), 3: len(want[2])}
    assert sorted(uidl_map(p)) == [1, 3]
    for cmd in ("DELE 2", "RETR 2", "LIST 2", "UIDL 2", "TOP 2 0"):
        with pytest.raises(poplib.error_proto, match="-ERR"):
            p._shortcmd(cmd)
    assert retr_bytes(p, 3) == want[2]
    p.rset()
    p.quit()


@pytest.mark.parametrize("mode", ["expunge", "flag", "trash"])
def test_dele_quit_each_delete_mode(daemon_factory, mode):
    d = daemon_factory(pop3={"delete_mode": mode})
    want = lmtp_deliver(d, "alice", [msg("m%d" % i) for i in range(1, 5)])
    p = d.pop3("alice", "alice-pw")
    before = uidl_map(p)
    assert p.dele(2).startswith(b"+OK")
    assert p.dele(4).startswith(b"+OK")          # the highest UID
    assert p.quit().startswith(b"+OK")
    # The next session: the DELE'd messages are hidden in every mode, the
    # others keep their UIDLs.
    p = d.pop3("alice", "alice-pw")
    assert p.stat() == (2, len(want[0]) + len(want[2]))
    assert uidl_map(p) == {1: before[1], 2: before[3]}
    assert retr_bytes(p, 1) == want[0] and retr_bytes(p, 2) == want[2]
    p.quit()
    # UIDs are never reused: the next delivery gets UID 5, in every mode.
    new = lmtp_deliver(d, "alice", [msg("m5")])
    d.restart()
    p = d.pop3("alice", "alice-pw")
    u = uidl_map(p)
    uv = uidvalidity_of(u)
    assert u == {1: dovecot_uidl(1, uv), 2: dovecot_uidl(3, uv), 3: dovecot_uidl(5, uv)}
    assert retr_bytes(p, 3) == new[0]
    p.quit()


def test_drop_without_quit_changes_nothing(daemon):
    want = lmtp_deliver(daemon, "alice", [msg("m%d" % i) for i in range(1, 4)])
    p = daemon.pop3("alice", "alice-pw")
    uidls = uidl_map(p)
    assert p.dele(1).startswith(b"+OK")
    assert p.dele(2).startswith(b"+OK")
    retr_bytes(p, 3)
    p.close()                                    # no QUIT: no UPDATE state
    p = daemon.pop3("alice", "alice-pw")
    assert uidl_map(p) == uidls
    assert read_all(p)[2] == want
    p.quit()
    daemon.restart()
    p = daemon.pop3("alice", "alice-pw")
    assert uidl_map(p) == uidls
    p.quit()


def test_open_session_keeps_its_snapshot(daemon):
    """DESIGN §2 / RFC 1939: an open session keeps its numbering; a message
    another session expunged answers RETR with -ERR."""
    want = lmtp_deliver(daemon, "alice", [msg("m%d" % i) for i in range(1, 4)])
    a = daemon.pop3("alice", "alice-pw")
    b = daemon.pop3("alice", "alice-pw")
    assert a.dele(2).startswith(b"+OK")
    assert a.quit().startswith(b"+OK")
    more = lmtp_deliver(daemon, "alice", [msg("m4")])
    assert b.stat()[0] == 3                      # still the login snapshot
    assert retr_bytes(b, 1) == want[0]
    with pytest.raises(poplib.error_proto, match="-ERR"):
        b.retr(2)
    with pytest.raises(poplib.error_proto, match="-ERR"):
        b.retr(4)                                # arrived after b's login
    b.quit()
    c = daemon.pop3("alice", "alice-pw")
    assert read_all(c)[2] == [want[0], want[2], more[0]]
    c.quit()


def login_or_in_use(d, user, pw, tries=30):
    """Log in; returns the session or the -ERR line.  A lock freed by a
    session that just ended may be released a moment after its QUIT
    answer, so an IN-USE is retried a bounded number of times."""
    last = None
    for _ in range(tries):
        p = d.pop3()
        try:
            p.user(user)
            p.pass_(pw)
            return p
        except poplib.error_proto as e:
            last = e.args[0]
            p.close()
            if b"[IN-USE]" not in last:
                return last
            time.sleep(0.1)
    return last


def test_lock_session_on(daemon_factory):
    d = daemon_factory(pop3={"lock_session": True})
    lmtp_deliver(d, "alice", [msg("m1")])
    a = d.pop3("alice", "alice-pw")
    b = d.pop3()
    b.user("alice")
    with pytest.raises(poplib.error_proto) as e:
        b.pass_("alice-pw")
    assert e.value.args[0].startswith(b"-ERR [IN-USE]"), e.value.args[0]
    b.close()
    # Another user is not locked out.
    o = d.pop3("bob", "bob-pw")
    o.quit()
    assert a.stat()[0] == 1
    a.quit()
    c = login_or_in_use(d, "alice", "alice-pw")
    assert isinstance(c, poplib.POP3), c
    # A dropped session frees the lock too.
    c.close()
    e2 = login_or_in_use(d, "alice", "alice-pw")
    assert isinstance(e2, poplib.POP3), e2
    e2.quit()


def test_lock_session_off_allows_two(daemon):
    lmtp_deliver(daemon, "alice", [msg("m1")])
    a = daemon.pop3("alice", "alice-pw")
    b = daemon.pop3("alice", "alice-pw")
    assert a.stat()[0] == 1 and b.stat()[0] == 1
    a.quit()
    b.quit()


def test_capa(daemon):
    p = daemon.pop3()
    caps = p.capa()
    for c in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "STLS"):
        assert c in caps, (c, caps)
    p.quit()
    p = daemon.pop3s()
    caps = p.capa()
    assert "USER" in caps and "STLS" not in caps, caps
    p.quit()


def test_no_tls_configured(daemon_factory):
    d = daemon_factory(tls=False)
    p = d.pop3()
    caps = p.capa()
    assert "STLS" not in caps and "USER" in caps, caps
    with pytest.raises(poplib.error_proto, match="-ERR"):
        p._shortcmd("STLS")
    p.user("alice")
    p.pass_("alice-pw")
    p.quit()


def test_plaintext_refused_without_allow_plaintext(daemon_factory):
    d = daemon_factory(allow_plaintext=False)
    lmtp_deliver(d, "alice", [msg("m1")])
    p = d.pop3()
    caps = p.capa()
    assert "USER" not in caps and "STLS" in caps, caps
    with pytest.raises(poplib.error_proto) as e:
        p.user("alice")
    assert e.value.args[0].startswith(b"-ERR [AUTH]"), e.value.args[0]
    with pytest.raises(poplib.error_proto, match="-ERR"):
        p.pass_("alice-pw")
    with pytest.raises(poplib.error_proto, match="-ERR"):
        p.stat()                                # not logged in
    # After STLS on the same connection: USER offered and accepted.
    p.stls(d.ssl_context())
    caps = p.capa()
    assert "USER" in caps and "STLS" not in caps, caps
    p.user("alice")
    p.pass_("alice-pw")
    assert p.stat()[0] == 1
    p.quit()
    p = d.pop3s("alice", "alice-pw")
    assert p.stat()[0] == 1
    p.quit()


def test_wrong_password_then_retry(daemon):
    p = daemon.pop3()
    p.user("alice")
    with pytest.raises(poplib.error_proto) as e:
        p.pass_("wrong")
    assert e.value.args[0].startswith(b"-ERR [AUTH]"), e.value.args[0]
    p.user("nosuchuser")
    with pytest.raises(poplib.error_proto) as e:
        p.pass_("whatever")
    assert e.value.args[0].startswith(b"-ERR [AUTH]"), e.value.args[0]
    p.user("alice")
    assert p.pass_("alice-pw").startswith(b"+OK")
    assert p.stat() == (0, 0)
    p.quit()


def test_commands_need_login(daemon):
    p = daemon.pop3()
    for cmd in ("STAT", "LIST", "RETR 1", "DELE 1", "UIDL", "TOP 1 0", "RSET"):
        with pytest.raises(poplib.error_proto, match="-ERR"):
            p._shortcmd(cmd)
    with pytest.raises(poplib.error_proto, match="-ERR"):
        p._shortcmd("PASS alice-pw")            # PASS before USER
    p.quit()


def test_stls_discards_pipelined_cleartext(daemon):
    """RFC 2595 §3.1 / DESIGN §3: what the client sent after STLS in the
    same cleartext write is thrown away, not run inside TLS."""
    s = daemon.raw(daemon.pop3_port)
    f = s.makefile("rb")
    assert f.readline().startswith(b"+OK")
    s.sendall(b"STLS\r\nXINJECTED\r\n")
    line = f.readline()
    assert line.startswith(b"+OK"), line
    f.close()
    t = daemon.ssl_context().wrap_socket(s, server_hostname="127.0.0.1")
    tf = t.makefile("rb")
    t.sendall(b"CAPA\r\n")
    line = tf.readline()
    assert line.startswith(b"+OK"), "first answer inside TLS: %r" % line
    caps = []
    for _ in range(100):
        line = tf.readline()
        if line in (b".\r\n", b""):
            break
        caps.append(line.strip())
    assert b"USER" in caps and b"STLS" not in caps, caps
    t.sendall(b"QUIT\r\n")
    assert tf.readline().startswith(b"+OK")
    tf.close()
    t.close()


def test_stls_when_already_tls(daemon):
    p = daemon.pop3s()
    with pytest.raises(poplib.error_proto, match="-ERR"):
        p._shortcmd("STLS")
    assert "USER" in p.capa()
    p.quit()


def test_pipelined_session(daemon):
    want = lmtp_deliver(daemon, "alice", [msg("m1"), msg("m2")])
    c = daemon.conn(daemon.pop3_port)
    f = c                         # read by lines
    assert f.readline().startswith(b"+OK")
    c.send(b"USER alice\r\nPASS alice-pw\r\nSTAT\r\nUIDL 2\r\nLIST\r\nNOOP\r\nQUIT\r\n")
    assert f.readline().startswith(b"+OK")
    assert f.readline().startswith(b"+OK")
    assert f.readline().rstrip() == b"+OK 2 %d" % sum(map(len, want))
    assert f.readline().startswith(b"+OK 2 ")
    assert f.readline().startswith(b"+OK")
    assert f.readline() == b"1 %d\r\n" % len(want[0])
    assert f.readline() == b"2 %d\r\n" % len(want[1])
    assert f.readline() == b".\r\n"
    assert f.readline().startswith(b"+OK")
    assert f.readline().startswith(b"+OK")
    assert f.readline() == b""                  # closed after QUIT
    c.close()


def test_deliver_cli_while_running(daemon):
    first = lmtp_deliver(daemon, "alice", [msg("by lmtp")])
    open_session = daemon.pop3("alice", "alice-pw")
    m = msg("by onebox deliver", b"8-bit \xe9\xe8\r\n")
    assert daemon.deliver("alice", m) == 0
    assert daemon.deliver("nosuchuser", m) == 67
    assert open_session.stat()[0] == 1           # its snapshot is from login
    open_session.quit()
    p = daemon.pop3("alice", "alice-pw")
    assert read_all(p)[2] == [first[0], m]
    u = uidl_map(p)
    uv = uidvalidity_of(u)
    assert u == {1: dovecot_uidl(1, uv), 2: dovecot_uidl(2, uv)}
    p.quit()


def test_deliver_cli_without_daemon(daemon_factory):
    d = daemon_factory(start=False)
    m = msg("before the daemon ran")
    assert d.deliver("bob", m) == 0
    assert d.deliver("nobody", m) == 67
    d.start()
    assert d.messages("bob") == [m]


@pytest.mark.skipif(not HAVE_IPV6, reason="no ::1 loopback on this machine")
def test_ipv6_listener(daemon):
    want = lmtp_deliver(daemon, "alice", [msg("over v6")])
    p = daemon.pop3("alice", "alice-pw", host="::1")
    assert retr_bytes(p, 1) == want[0]
    p.quit()


def test_quit_before_login_and_unknown_command(daemon):
    p = daemon.pop3()
    with pytest.raises(poplib.error_proto, match="-ERR"):
        p._shortcmd("XYZZY")
    assert p.quit().startswith(b"+OK")


def test_commands_split_across_reads(daemon):
    """A command arriving a few octets at a time, CR and LF in different
    reads, is one command."""
    want = lmtp_deliver(daemon, "alice", [msg("split")])
    c = daemon.conn(daemon.pop3_port)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert c.readline().startswith(b"+OK")
    for piece in (b"US", b"ER al", b"ice\r", b"\nPASS alice-pw\r", b"\n", b"RE", b"TR 1\r", b"\n"):
        c.send(piece)
        time.sleep(0.02)
    assert c.readline().startswith(b"+OK")
    assert c.readline().startswith(b"+OK")
    assert c.readline().startswith(b"+OK")
    assert c.read(len(want[0]) + 3) == want[0] + b".\r\n"
    c.send(b"NOOP\r\n")
    assert c.readline().startswith(b"+OK")   # no empty command was seen in between
    c.send(b"QUIT\r\n")
    assert c.readline().startswith(b"+OK")
    c.close()


def test_two_sessions_delete_the_same_message(daemon):
    want = lmtp_deliver(daemon, "alice", [msg("m%d" % i) for i in range(1, 4)])
    a = daemon.pop3("alice", "alice-pw")
    b = daemon.pop3("alice", "alice-pw")
    uidls = uidl_map(a)
    assert a.dele(2).startswith(b"+OK")
    assert b.dele(2).startswith(b"+OK")
    assert b.dele(3).startswith(b"+OK")
    assert a.quit().startswith(b"+OK")
    assert b.quit().startswith(b"+OK")
    p = daemon.pop3("alice", "alice-pw")
    assert uidl_map(p) == {1: uidls[1]}
    assert retr_bytes(p, 1) == want[0]
    p.quit()
