"""
test_auth.py - SASL (IMAP AUTHENTICATE, POP3 AUTH), the plaintext policy,
the verification cache and the guessing limits (docs/security.md).

Clients: imaplib.authenticate and poplib with raw AUTH lines.  The
SCRAM-SHA-256 client below is written here from RFC 5802/7677 with hashlib
and hmac, independently of protocols/sasl.c (which tests/unit/test_sasl.c
checks against the RFC 7677 vector); the same vector is checked here too.
"""

import base64
import hashlib
import hmac
import imaplib
import os
import poplib
import re
import threading
import time

import pytest

B64 = lambda b: base64.b64encode(b).decode()


# ------------------------------------------------------- a SCRAM client

class Scram:
    """The client side of SCRAM-SHA-256 (RFC 5802 section 3)."""

    def __init__(self, user, password, nonce=None):
        self.user, self.password = user, password
        self.nonce = nonce or B64(os.urandom(18))
        self.server_sig = None
        self.verified = False

    def first(self):
        name = self.user.replace("=", "=3D").replace(",", "=2C")
        self.bare = "n=%s,r=%s" % (name, self.nonce)
        return ("n,," + self.bare).encode()

    def final(self, server_first):
        sf = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in sf.split(","))
        assert attrs["r"].startswith(self.nonce) and len(attrs["r"]) > len(self.nonce)
        salt, it = base64.b64decode(attrs["s"]), int(attrs["i"])
        self.iterations = it
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, it)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = "c=biws,r=" + attrs["r"]
        auth_msg = ",".join((self.bare, sf, without_proof)).encode()
        sig = hmac.new(stored_key, auth_msg, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.server_sig = hmac.new(server_key, auth_msg, hashlib.sha256).digest()
        return ("%s,p=%s" % (without_proof, B64(proof))).encode()

    def check(self, server_final):
        assert server_final.decode() == "v=" + B64(self.server_sig)
        self.verified = True
        return b""

    def imaplib_cb(self):
        """A callback for imaplib.authenticate: one step per challenge."""
        steps = iter((lambda _: self.first(), self.final, self.check))
        return lambda challenge: next(steps)(challenge)


def test_scram_client_matches_rfc7677_vector():
    # RFC 7677 section 3: our test client must be right before it judges.
    c = Scram("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert c.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = c.final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    c.check(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


# ------------------------------------------------------------- helpers

class RawImap:
    def __init__(self, daemon, source=None):
        self.c = daemon.conn(daemon.imap_port, source=source)
        self.greeting = self.line()

    def line(self):
        return self.c.readline().decode().rstrip("\r\n")

    def send(self, s):
        self.c.send(s.encode() + b"\r\n")

    def until(self, tag):
        unt = []
        for _ in range(1000):
            line = self.line()
            if line.startswith(tag + " "):
                return unt, line
            unt.append(line)
        raise AssertionError("no tagged answer")

    def cmd(self, tag, s):
        self.send("%s %s" % (tag, s))
        return self.until(tag)

    def close(self):
        self.c.close()


class RawPop:
    def __init__(self, daemon, source=None):
        self.c = daemon.conn(daemon.pop3_port, source=source)
        self.greeting = self.line()

    def line(self):
        return self.c.readline().decode().rstrip("\r\n")

    def send(self, s):
        self.c.send(s.encode() + b"\r\n")

    def cmd(self, s):
        self.send(s)
        return self.line()

    def close(self):
        self.c.close()


def imap_caps(daemon, tls=False):
    m = daemon.imaps() if tls else daemon.imap()
    caps = m.capabilities
    m.logout()
    return caps


# ----------------------------------------------------------------- IMAP

def test_imap_mechanisms_advertised(daemon_factory):
    d = daemon_factory(allow_plaintext=False)
    caps = imap_caps(d)
    assert "AUTH=SCRAM-SHA-256" in caps and "LOGINDISABLED" in caps
    assert "AUTH=PLAIN" not in caps and "AUTH=LOGIN" not in caps
    caps = imap_caps(d, tls=True)
    for c in ("AUTH=PLAIN", "AUTH=LOGIN", "AUTH=SCRAM-SHA-256"):
        assert c in caps
    assert "LOGINDISABLED" not in caps
    # Without TLS the password mechanisms are refused; SCRAM is not one.
    r = RawImap(d)
    _, t = r.cmd("a", "AUTHENTICATE PLAIN " + B64(b"\0alice\0alice-pw"))
    assert t.startswith("a NO [PRIVACYREQUIRED]"), t
    _, t = r.cmd("b", "AUTHENTICATE LOGIN")
    assert t.startswith("b NO [PRIVACYREQUIRED]"), t
    r.close()
    m = d.imap()
    scram = Scram("alice", "alice-pw")
    typ, _ = m.authenticate("SCRAM-SHA-256", scram.imaplib_cb())
    assert typ == "OK" and scram.verified and m.state == "AUTH"
    m.logout()


def test_imap_plain_and_login(daemon):
    m = daemon.imap()
    typ, _ = m.authenticate("PLAIN", lambda _: b"\0alice\0alice-pw")
    assert typ == "OK"
    m.logout()

    m = daemon.imap()
    answers = {b"Username:": b"bob", b"Password:": b"bob-pw"}
    typ, _ = m.authenticate("LOGIN", lambda ch: answers[ch])
    assert typ == "OK"
    m.logout()

    for mech, cb in (("PLAIN", lambda _: b"\0alice\0wrong"),
                     ("LOGIN", lambda ch: {b"Username:": b"alice", b"Password:": b"x"}[ch]),
                     ("PLAIN", lambda _: b"\0nosuchuser\0alice-pw")):
        m = daemon.imap()
        with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED"):
            m.authenticate(mech, cb)
        m.logout()

    # LOGIN with the user name as initial response (SASL-IR).
    r = RawImap(daemon)
    r.send("a AUTHENTICATE LOGIN " + B64(b"alice"))
    assert r.line() == "+ " + B64(b"Password:")
    r.send(B64(b"alice-pw"))
    _, t = r.until("a")
    assert t.startswith("a OK [CAPABILITY"), t
    r.close()


def test_imap_scram(daemon):
    m = daemon.imap()
    scram = Scram("bob", "bob-pw")
    typ, data = m.authenticate("SCRAM-SHA-256", scram.imaplib_cb())
    assert typ == "OK" and scram.verified
    assert scram.iterations >= 4096
    m.select("INBOX")
    m.logout()

    m = daemon.imap()
    with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED"):
        m.authenticate("SCRAM-SHA-256", Scram("bob", "wrong").imaplib_cb())
    m.logout()

    # An unknown user gets a salt like anyone (stable per name) and fails.
    salts = []
    for _ in range(2):
        r = RawImap(daemon)
        c = Scram("nobody", "x")
        r.send("a AUTHENTICATE SCRAM-SHA-256 " + B64(c.first()))   # SASL-IR
        line = r.line()
        assert line.startswith("+ "), line
        sf = base64.b64decode(line[2:])
        salts.append(re.search(rb",s=([^,]+),", sf).group(1))
        r.send(B64(c.final(sf)))
        _, t = r.until("a")
        assert t.startswith("a NO [AUTHENTICATIONFAILED]"), t
        r.close()
    assert salts[0] == salts[1]


def test_imap_bad_input_and_cancel(daemon):
    r = RawImap(daemon)
    # Malformed base64: as the initial response and as a continuation.
    _, t = r.cmd("a", "AUTHENTICATE PLAIN not*base64")
    assert t.startswith("a BAD"), t
    r.send("b AUTHENTICATE SCRAM-SHA-256")
    assert r.line() == "+ "
    r.send("%%%")
    _, t = r.until("b")
    assert t.startswith("b BAD"), t
    # Cancelled at each step of SCRAM and LOGIN.
    r.send("c AUTHENTICATE SCRAM-SHA-256 " + B64(Scram("alice", "alice-pw").first()))
    assert r.line().startswith("+ ")
    r.send("*")
    _, t = r.until("c")
    assert t.startswith("c BAD"), t
    r.send("d AUTHENTICATE LOGIN")
    assert r.line() == "+ " + B64(b"Username:")
    r.send(B64(b"alice"))
    assert r.line() == "+ " + B64(b"Password:")
    r.send("*")
    _, t = r.until("d")
    assert t.startswith("d BAD"), t
    # Malformed SCRAM (no nonce), an unknown mechanism, then a login works.
    _, t = r.cmd("e", "AUTHENTICATE SCRAM-SHA-256 " + B64(b"n,,n=alice"))
    assert t.startswith("e BAD"), t
    _, t = r.cmd("f", "AUTHENTICATE CRAM-MD5")
    assert t.startswith("f NO"), t
    _, t = r.cmd("g", "AUTHENTICATE PLAIN " + B64(b"\0alice\0alice-pw"))
    assert t.startswith("g OK"), t
    r.close()
    # imaplib's own cancel: the callback returning None sends "*".
    m = daemon.imap()
    with pytest.raises(imaplib.IMAP4.error):
        m.authenticate("PLAIN", lambda _: None)
    m.logout()


# ----------------------------------------------------------------- POP3

def pop3_scram(p, user, password, ir=True):
    """AUTH SCRAM-SHA-256 over raw POP3 lines; returns the final line."""
    c = Scram(user, password)
    if ir:
        line = p.cmd("AUTH SCRAM-SHA-256 " + B64(c.first()))
    else:
        assert p.cmd("AUTH SCRAM-SHA-256") == "+ "
        line = p.cmd(B64(c.first()))
    if not line.startswith("+ "):
        return line
    line = p.cmd(B64(c.final(base64.b64decode(line[2:]))))
    if not line.startswith("+ "):
        return line
    c.check(base64.b64decode(line[2:]))
    return p.cmd("")


def test_pop3_auth(daemon_factory):
    d = daemon_factory(allow_plaintext=False)
    p = d.pop3()
    capa = p.capa()
    assert capa["SASL"] == ["SCRAM-SHA-256"] and "USER" not in capa
    assert p._shortcmd("AUTH").startswith(b"+OK")
    lines = []
    while True:
        line = p._getline()[0]
        if line == b".":
            break
        lines.append(line)
    assert lines == [b"SCRAM-SHA-256"]
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p._shortcmd("AUTH PLAIN " + B64(b"\0alice\0alice-pw"))
    p.quit()

    p = d.pop3s()
    assert p.capa()["SASL"] == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
    assert p._shortcmd("AUTH PLAIN " + B64(b"\0alice\0alice-pw")).startswith(b"+OK")
    assert p.stat() == (0, 0)
    p.quit()

    # SCRAM in cleartext, with and without an initial response.
    for ir in (True, False):
        r = RawPop(d)
        assert pop3_scram(r, "alice", "alice-pw", ir=ir).startswith("+OK")
        assert r.cmd("STAT").startswith("+OK")
        r.close()
    r = RawPop(d)
    assert pop3_scram(r, "alice", "nope").startswith("-ERR [AUTH]")
    r.close()


def test_pop3_auth_plain_login_errors(daemon):
    r = RawPop(daemon)
    assert r.cmd("AUTH PLAIN " + B64(b"\0alice\0bad")).startswith("-ERR [AUTH]")
    assert r.cmd("AUTH PLAIN") == "+ "
    assert r.cmd("*").startswith("-ERR")                     # cancelled
    assert r.cmd("AUTH PLAIN ###").startswith("-ERR")        # malformed base64
    assert r.cmd("AUTH LOGIN") == "+ " + B64(b"Username:")
    assert r.cmd("!!") .startswith("-ERR")                   # malformed base64
    assert r.cmd("AUTH CRAM-MD5").startswith("-ERR")
    assert r.cmd("AUTH PLAIN " + B64(b"bob\0alice\0alice-pw")).startswith("-ERR [AUTH]")
    assert r.cmd("AUTH LOGIN") == "+ " + B64(b"Username:")
    assert r.cmd(B64(b"bob")) == "+ " + B64(b"Password:")
    assert r.cmd(B64(b"bob-pw")).startswith("+OK")
    assert r.cmd("STAT").startswith("+OK")
    r.close()
    p = daemon.pop3()
    with pytest.raises(poplib.error_proto, match="Malformed"):
        p._shortcmd("AUTH PLAIN =")                           # empty: malformed
    assert p._shortcmd("AUTH PLAIN " + B64(b"\0alice\0alice-pw")).startswith(b"+OK")
    p.quit()


# ------------------------------------------------------ cache and passwd

def test_cache_and_passwd(daemon):
    for _ in range(3):
        daemon.imap("alice", "alice-pw").logout()
    assert daemon.log_text().count("verification cache hit") >= 2
    # A wrong password is never a cache hit.
    m = daemon.imap()
    with pytest.raises(imaplib.IMAP4.error):
        m.login("alice", "alice-pwX")
    m.logout()
    # `user passwd` in another process: the cached password stops working
    # at once, and so does the old SCRAM secret.
    r = daemon.cli("user", "passwd", "alice", input=b"new-pw\n")
    assert r.returncode == 0, r.stderr
    hits = daemon.log_text().count("verification cache hit")
    m = daemon.imap()
    with pytest.raises(imaplib.IMAP4.error):
        m.login("alice", "alice-pw")
    m.logout()
    assert daemon.log_text().count("verification cache hit") == hits
    daemon.imap("alice", "new-pw").logout()
    m = daemon.imap()
    with pytest.raises(imaplib.IMAP4.error):
        m.authenticate("SCRAM-SHA-256", Scram("alice", "alice-pw").imaplib_cb())
    m.logout()
    m = daemon.imap()
    assert m.authenticate("SCRAM-SHA-256", Scram("alice", "new-pw").imaplib_cb())[0] == "OK"
    m.logout()
    # `user del`: gone at once, cache or not.
    daemon.imap("bob", "bob-pw").logout()
    assert daemon.cli("user", "del", "bob").returncode == 0
    m = daemon.imap()
    with pytest.raises(imaplib.IMAP4.error):
        m.login("bob", "bob-pw")
    m.logout()


def test_config_keys(daemon_factory):
    d = daemon_factory(start=False)
    d.update_settings({"auth": {"fail_delay": "2s", "fail_delay_max": "500ms"}})
    r = d.cli("check")
    assert r.returncode != 0 and b"fail_delay_max" in r.stderr
    d.update_settings({"auth": {"fail_delay": "250ms", "fail_delay_max": "1m",
                                "scram_iterations": 100}})
    r = d.cli("check")
    assert r.returncode != 0 and b"scram_iterations" in r.stderr
    d.update_settings({"auth": {"scram_iterations": 8192, "cache_ttl": 0}})
    r = d.cli("check")
    assert r.returncode == 0, r.stderr
    d.start()
    r = d.cli("user", "add", "carol", input=b"carol-pw\n")
    assert r.returncode == 0
    m = d.imap()
    scram = Scram("carol", "carol-pw")
    assert m.authenticate("SCRAM-SHA-256", scram.imaplib_cb())[0] == "OK"
    assert scram.iterations == 8192
    m.logout()
    for _ in range(2):
        d.imap("carol", "carol-pw").logout()
    assert "verification cache hit" not in d.log_text()     # cache_ttl = 0


# ------------------------------------------------------------- guessing

DELAY_RE = re.compile(r"answer delayed (\d+) ms \(failures: connection (\d+), "
                      r"address (\S+) (\d+), user (\d+)\)")


def delays(daemon):
    return [(int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5)))
            for m in DELAY_RE.finditer(daemon.log_text())]


def test_failures_delay_the_connection(daemon_factory):
    d = daemon_factory(auth={"fail_delay": "20ms", "fail_delay_max": "1s",
                             "fail_threshold": 1000})
    r = RawImap(d)
    for i in range(4):
        _, t = r.cmd("a%d" % i, "LOGIN alice wrong%d" % i)
        assert t.startswith("a%d NO [AUTHENTICATIONFAILED]" % i), t
    # No such user: the same answer, the same path, the same accounting.
    _, t = r.cmd("b", "LOGIN nosuchuser wrong")
    assert t.startswith("b NO [AUTHENTICATIONFAILED]"), t
    _, t = r.cmd("c", "LOGIN alice alice-pw")
    assert t.startswith("c OK"), t
    r.close()
    got = [x[0] for x in delays(d)]
    assert got == [20, 40, 80, 160, 320], got
    assert "being delayed" not in d.log_text()


def test_guessing_slows_one_address_only(daemon_factory):
    cap_ms = 6000
    d = daemon_factory(auth={"fail_delay": "10ms", "fail_delay_max": "%dms" % cap_ms,
                             "fail_threshold": 5})
    # 50 wrong passwords for alice from 127.0.0.2, each on its own
    # connection, in parallel (as a guesser would).
    def guess(i, out):
        p = RawPop(d, source="127.0.0.2")
        p.cmd("USER alice")
        out[i] = p.cmd("PASS guess%d" % i)
        p.close()
    answers = [None] * 50
    threads = [threading.Thread(target=guess, args=(i, answers)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(a and a.startswith("-ERR [AUTH]") for a in answers), answers
    log = d.log_text()
    assert "address 127.0.0.2 is being delayed" in log
    assert 'user name "alice" is being delayed' in log
    slow = [x for x in delays(d) if x[2] == "127.0.0.2"]
    assert len(slow) == 50 and max(x[3] for x in slow) == 50
    assert max(x[0] for x in slow) == cap_ms

    # One more guess from 127.0.0.2 waits the cap; meanwhile 127.0.0.1
    # logs in again and again, as alice (whose name is being guessed) and
    # bob, at full speed: every one of them is answered first.
    done = threading.Event()
    last = {}
    def slow_guess():
        p = RawPop(d, source="127.0.0.2")
        p.cmd("USER bob")
        last["answer"] = p.cmd("PASS guess")
        done.set()
        p.close()
    t = threading.Thread(target=slow_guess)
    t.start()
    deadline = time.monotonic() + 30
    while not any(x[2] == "127.0.0.2" and x[3] == 51 for x in delays(d)):
        assert time.monotonic() < deadline, "the 51st guess was never counted"
        time.sleep(0.02)
    logins = 0
    for i in range(10):
        user = ("alice", "bob")[i % 2]
        p = RawPop(d, source="127.0.0.1")
        assert p.cmd("USER " + user).startswith("+OK")
        assert p.cmd("PASS %s-pw" % user).startswith("+OK")
        p.cmd("QUIT")
        p.close()
        logins += 1
    finished_first = not done.is_set()
    t.join(60)
    assert last["answer"].startswith("-ERR [AUTH]")
    assert finished_first, "127.0.0.1 was held up behind 127.0.0.2's delay"
    assert [x for x in delays(d) if x[2] == "127.0.0.2"][-1][0] == cap_ms
    # 127.0.0.1's own failure only costs its connection's first delay.
    p = RawPop(d, source="127.0.0.1")
    p.cmd("USER carol")
    assert p.cmd("PASS x").startswith("-ERR [AUTH]")
    p.close()
    mine = [x for x in delays(d) if x[2] == "127.0.0.1"]
    assert len(mine) == 1 and mine[0][3] == 1 and mine[0][0] == 10


def _concurrent_logins(daemon, user, password, n):
    """N connections send LOGIN at once; returns their tagged answers."""
    socks = []
    try:
        for _ in range(n):
            s = daemon.raw(daemon.imap_port)
            f = s.makefile("rb")
            assert f.readline().startswith(b"* OK")
            socks.append((s, f))
        for s, _ in socks:
            s.sendall(b'a LOGIN "%s" "%s"\r\n' % (user.encode(), password.encode()))
        answers = []
        for _, f in socks:
            line = f.readline()
            for _ in range(20):  # skip untagged lines, boundedly
                if line.startswith(b"a "):
                    break
                line = f.readline()
            answers.append(line.split(b" ")[1])
        return answers
    finally:
        for s, f in socks:
            f.close()
            s.close()


def test_simultaneous_logins_of_one_account(daemon):
    # Identical checks in flight are answered by one hash (auth.c
    # single flight); every client must still get its own right answer.
    assert _concurrent_logins(daemon, "alice", "alice-pw", 30) == [b"OK"] * 30
    assert daemon.log_text().count("login as alice") >= 30
    # The same for a wrong password and for an unknown name: all refused.
    assert _concurrent_logins(daemon, "alice", "wrong", 6) == [b"NO"] * 6
    assert _concurrent_logins(daemon, "nobody", "wrong", 6) == [b"NO"] * 6
    # And a right password still works afterwards.
    daemon.imap("alice", "alice-pw").logout()
