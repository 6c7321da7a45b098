"""
Non-synchronizing literals (RFC 7888) and imap.nonsync_literals: "plus"
(LITERAL+, the default), "minus" (LITERAL-: "{N+}" up to 4096 octets, a
bigger one refused with BAD [TOOBIG] and its octets read and thrown away, or
BYE [TOOBIG] past what the command could take at all) and "off" (neither:
every "{N+}" refused).  Over raw sockets, checking what the store kept.
"""


import pytest

from conftest import RawImap as Raw


def message(size):
    """A message of exactly SIZE octets, CRLF lines.  Its body lines look
    like IMAP commands, so a server that lost track of the literal would
    run them (and a mailbox "Leaked" would appear)."""
    head = b"From: a@example.org\r\nSubject: lit\r\n\r\n"
    line = b"z1 CREATE Leaked\r\n"
    room = size - len(head)
    body = line * ((room - 2) // len(line))
    body += b"x" * (room - len(body) - 2) + b"\r\n"
    m = head + body
    assert len(m) == size, (len(m), size)
    return m


def leaked(r):
    unt, _ = r.ok('LIST "" *')
    return any("Leaked" in u for u in unt)


def append_nonsync(r, tag, size, literal8=False):
    """APPEND a SIZE-octet message as "{SIZE+}" in one send, then NOOP;
    return (untagged, tagged answer of the APPEND)."""
    m = message(size)
    mark = "~{%d+}" % size if literal8 else "{%d+}" % size
    r.send(("%s APPEND INBOX %s\r\n" % (tag, mark)).encode() + m + b"\r\n")
    return r.until(tag)


def stored_bodies(r):
    """BODY[] of every message in INBOX, as bytes."""
    r.ok("SELECT INBOX")
    out = []
    r.send("f FETCH 1:* (BODY.PEEK[])\r\n")
    for _ in range(100000):
        ln = r.f.readline()
        if ln.startswith(b"f "):
            assert ln.startswith(b"f OK"), ln
            break
        if ln.rstrip(b"\r\n").endswith(b"}"):
            n = int(ln.rstrip(b"\r\n").rsplit(b"{", 1)[1][:-1])
            out.append(r.f.read(n))
    r.ok("UNSELECT")
    return out


# -------------------------------------------------------------- the default

def test_default_is_literal_plus(daemon):
    r = Raw(daemon)
    assert "LITERAL+" in r.greeting and "LITERAL-" not in r.greeting
    r.login()
    caps = r.caps()
    assert "LITERAL+" in caps and "LITERAL-" not in caps
    # LITERAL+: any size, here past 4096 octets.
    _, t = append_nonsync(r, "a", 9000)
    assert t.startswith("a OK"), t
    assert stored_bodies(r) == [message(9000)]
    r.close()


# ------------------------------------------------------------------ LITERAL-

@pytest.fixture
def minus(daemon_factory):
    return daemon_factory(settings={"imap": {"nonsync_literals": "minus"}})


def test_minus_is_advertised_instead_of_plus(minus):
    r = Raw(minus)
    assert "LITERAL-" in r.greeting and "LITERAL+" not in r.greeting
    assert "LITERAL-" in r.caps() and "LITERAL+" not in r.caps()
    r.login()
    caps = r.caps()
    assert "LITERAL-" in caps and "LITERAL+" not in caps    # RFC 7888 §5: never both
    r.close()


def test_minus_takes_nonsync_up_to_4096(minus):
    r = Raw(minus)
    # A "{N+}" user name in LOGIN, then APPEND of exactly 4096 octets.
    r.send("L LOGIN {5+}\r\nalice {8+}\r\nalice-pw\r\n")
    _, t = r.until("L")
    assert t.startswith("L OK"), t
    _, t = append_nonsync(r, "a", 4096)
    assert t.startswith("a OK"), t
    _, t = append_nonsync(r, "b", 4096, literal8=True)   # RFC 7888 §6
    assert t.startswith("b OK"), t
    assert stored_bodies(r) == [message(4096), message(4096)]
    r.close()


def test_minus_refuses_bigger_nonsync_with_toobig(minus):
    r = Raw(minus)
    r.login()
    # 4097 octets: BAD [TOOBIG] (RFC 7888 §5); the octets are read and
    # thrown away, so the "z1 DELETE INBOX" lines inside are not run.
    unt, t = append_nonsync(r, "a", 4097)
    assert t.startswith("a BAD [TOOBIG]"), t
    # Well past the 64 KiB bound other refused literals are swallowed up
    # to, but within APPENDLIMIT: still a tagged answer, not a BYE.
    unt, t = append_nonsync(r, "b", 300000)
    assert t.startswith("b BAD [TOOBIG]"), t
    unt, t = append_nonsync(r, "c", 5000, literal8=True)
    assert t.startswith("c BAD [TOOBIG]"), t
    # Other commands too.
    r.send(b"d LOGIN {4097+}\r\n" + b"u" * 4097 + b" pw\r\n")
    _, t = r.until("d")
    assert t.startswith("d BAD [TOOBIG]"), t
    # In step, nothing stored, nothing run.
    assert r.messages() == 0 and not leaked(r)
    # The same message as a synchronizing literal is fine.
    m = message(300000)
    r.send(b"s APPEND INBOX {300000}\r\n")
    assert r.line().startswith("+")
    r.send(m + b"\r\n")
    _, t = r.until("s")
    assert t.startswith("s OK"), t
    assert stored_bodies(r) == [m]
    r.close()


def test_minus_closes_past_appendlimit(daemon_factory):
    d = daemon_factory(settings={"imap": {"nonsync_literals": "minus"}},
                       lmtp={"max_message_size": "64K"})
    r = Raw(d)
    r.login()
    assert "APPENDLIMIT=65536" in r.caps()
    # A non-synchronizing literal bigger than anything APPEND could take:
    # closed with BYE [TOOBIG] before its octets are sent (RFC 7888 §4
    # choice 2; §5 asks for TOOBIG in the BYE).
    r.send("a APPEND INBOX {70000+}\r\n")
    ln = r.line()
    assert ln.startswith("* BYE [TOOBIG]"), ln
    with pytest.raises((EOFError, ConnectionError)):
        for _ in range(10):
            r.line()
    r.close()
    # The daemon goes on.
    r = Raw(d)
    r.login()
    assert r.messages() == 0
    r.close()


# ---------------------------------------------------------------------- off

def test_off_advertises_neither_and_refuses_nonsync(daemon_factory):
    d = daemon_factory(settings={"imap": {"nonsync_literals": "off"}})
    r = Raw(d)
    assert "LITERAL" not in r.greeting
    r.login()
    caps = r.caps()
    assert "LITERAL+" not in caps and "LITERAL-" not in caps
    # Even a small one; it is swallowed and the session goes on.
    unt, t = append_nonsync(r, "a", 100)
    assert t.startswith("a BAD"), t
    r.send("b CREATE {3+}\r\nfoo\r\n")
    _, t = r.until("b")
    assert t.startswith("b BAD"), t
    unt, _ = r.ok('LIST "" *')
    assert not any("foo" in u for u in unt), unt
    # Synchronizing literals work as ever.
    r.send("c CREATE {3}\r\n")
    assert r.line().startswith("+")
    r.send("bar\r\n")
    _, t = r.until("c")
    assert t.startswith("c OK"), t
    assert r.messages() == 0 and not leaked(r)
    # One bigger than the server reads to throw away: BYE, closed.
    r.send("e APPEND INBOX {1000000+}\r\n")
    ln = r.line()
    assert ln.startswith("* BYE"), ln
    r.close()


# ------------------------------------------------------------ configuration

def test_bad_setting_is_a_config_error(daemon_factory):
    d = daemon_factory(users={}, settings={"imap": {"nonsync_literals": "sometimes"}},
                       start=False)
    r = d.cli("check")
    assert r.returncode != 0
    err = r.stderr.decode()
    lines = d.conf.read_text().splitlines()
    line = next(i for i, ln in enumerate(lines, 1) if ln.startswith("imap ="))
    assert "%s:%d: imap.nonsync_literals" % (d.conf, line) in err, err
    assert '"plus", "minus" or "off"' in err, err
    for ok in ("plus", "minus", "off"):
        d.update_settings({"imap": {"nonsync_literals": ok}})
        r = d.cli("check")
        assert r.returncode == 0, r.stderr


def test_off_still_takes_literal_minus_after_enable_imap4rev2(daemon_factory):
    """RFC 9051 §4.3: "{N+}" up to 4096 octets is IMAP4rev2 base syntax.
    With IMAP4rev1 advertised as well, it applies only once the client
    has sent ENABLE IMAP4rev2 (§6.1.1), and UNAUTHENTICATE undoes that."""
    d = daemon_factory(settings={"imap": {"nonsync_literals": "off"}})
    r = Raw(d)
    r.login()
    if "IMAP4rev2" not in r.caps():
        pytest.skip("IMAP4rev2 not offered")
    r.send("a CREATE {2+}\r\nm1\r\n")
    _, t = r.until("a")
    assert t.startswith("a BAD"), t
    unt, _ = r.ok("ENABLE IMAP4rev2")
    assert unt == ["* ENABLED IMAP4rev2"], unt
    assert "LITERAL-" not in r.caps() and "LITERAL+" not in r.caps()
    r.send("b CREATE {2+}\r\nm2\r\n")
    _, t = r.until("b")
    assert t.startswith("b OK"), t
    unt, t = append_nonsync(r, "c", 4097)
    assert t.startswith("c BAD [TOOBIG]"), t
    r.ok("UNAUTHENTICATE")
    r.login()
    r.send("e CREATE {2+}\r\nm3\r\n")
    _, t = r.until("e")
    assert t.startswith("e BAD"), t
    unt, _ = r.ok('LIST "" m*')
    names = " ".join(unt)
    assert "m2" in names and "m1" not in names and "m3" not in names and not leaked(r), unt
    r.close()
