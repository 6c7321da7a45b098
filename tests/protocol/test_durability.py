"""
Durability (DESIGN §3): an LMTP 250 is sent only after the commit is
durable.  Kill -9 the daemon in the middle of a stream of deliveries, start
it again on the same data folder, and every message that got its 250 must be
there byte-identical; nothing stored may be a torn or partial message.

The same for the other writes, each repeated with kills at varying points
(in the middle of the data, a few moments after the command, right after
the answer): IMAP APPEND (there iff the tagged OK came, never half), COPY
and MOVE of many messages and EXPUNGE (all or nothing; IMAP and POP3 agree
afterwards), and POP3 QUIT after DELE in each pop3.delete_mode (applied iff
the +OK came, never a part of the set).
"""

import random
import re
import smtplib
import threading
import time

import pytest

from conftest import lmtp_send, lmtp_stored, make_body, retr_bytes

STREAMS = 3               # concurrent LMTP connections (exercises group commit)
KILL_AFTER_ACKS = 300     # kill once this many 250s arrived ...
KILL_AFTER_SECONDS = 3.0  # ... or this long after the first one, whichever first
MAX_WAIT_FIRST_ACK = 60   # bound on waiting for the stream to get going


def make_message(stream, seq, rnd):
    """A distinct message, identified by its X-Test-Id header, with a body
    of a random size (a few bytes to ~300 KB) so some commits are large."""
    size = rnd.choice([0, 10, 500, 4000, 30_000, 300_000])
    body = make_body(size, seed=stream * 1_000_003 + seq, line_max=rnd.choice([80, 1000])) if size else b""
    return (b"X-Test-Id: %d-%d\r\nSubject: durability %d/%d\r\n\r\n" % (stream, seq, stream, seq)
            + body)


class Stream(threading.Thread):
    def __init__(self, d, n, acked, lock, stop):
        super().__init__(daemon=True)
        self.d, self.n, self.acked, self.lock, self.stop = d, n, acked, lock, stop
        self.sent = {}
        self.error = None

    def run(self):
        rnd = random.Random(self.n)
        try:
            c = self.d.lmtp(timeout=30)
            for seq in range(100_000):
                if self.stop.is_set():
                    break
                m = make_message(self.n, seq, rnd)
                key = "%d-%d" % (self.n, seq)
                self.sent[key] = lmtp_stored(m)
                _, rr, data = lmtp_send(c, "s@example.org", ["alice@example.com"], m)
                if data.get("alice@example.com", (0,))[0] == 250:
                    with self.lock:
                        self.acked.append(key)
                else:
                    self.error = "not accepted: %r %r" % (rr, data)
                    break
        except (OSError, smtplib.SMTPException, EOFError):
            pass    # the daemon was killed under us: expected
        except Exception as e:   # noqa: BLE001 - reported by the test
            self.error = repr(e)


def test_kill9_mid_stream_loses_no_acknowledged_message(daemon_factory):
    d = daemon_factory(users={"alice": "pw"})
    acked, lock, stop = [], threading.Lock(), threading.Event()
    streams = [Stream(d, n, acked, lock, stop) for n in range(STREAMS)]
    for s in streams:
        s.start()

    # Wait for the first 250 (bounded), then for enough acks or a while.
    deadline = time.monotonic() + MAX_WAIT_FIRST_ACK
    while not acked and time.monotonic() < deadline and any(s.is_alive() for s in streams):
        time.sleep(0.01)
    assert acked, "no delivery acknowledged: %r\n%s" % ([s.error for s in streams], d.log_tail())
    kill_at = time.monotonic() + KILL_AFTER_SECONDS
    while len(acked) < KILL_AFTER_ACKS and time.monotonic() < kill_at:
        time.sleep(0.005)
    d.kill9()
    with lock:
        acked_at_kill = list(acked)
    stop.set()
    for s in streams:
        s.join(60)
        assert not s.is_alive(), "an LMTP stream did not notice the kill"
    errors = [s.error for s in streams if s.error]
    assert not errors, errors
    # A reply may have arrived between kill and our copy: use the final list.
    acknowledged = set(acked)
    assert set(acked_at_kill) <= acknowledged
    sent = {}
    for s in streams:
        sent.update(s.sent)

    d.start(fixed_ports=True)
    p = d.pop3("alice", "pw")
    count, _ = p.stat()
    stored = {}
    for i in range(1, count + 1):
        m = retr_bytes(p, i)
        mo = re.match(rb"X-Test-Id: (\d+-\d+)\r\n", m)
        assert mo, "message %d is not one we sent: %r" % (i, m[:200])
        key = mo.group(1).decode()
        assert key not in stored, "message %s stored twice" % key
        assert m == sent[key], "message %s is stored torn: %d octets of %d" % (
            key, len(m), len(sent[key]))
        stored[key] = m
    p.quit()
    print("kill -9 after %d acknowledged deliveries; %d sent, %d stored after restart"
          % (len(acknowledged), len(sent), len(stored)))
    missing = sorted(acknowledged - set(stored))
    assert not missing, "%d acknowledged messages lost after kill -9: %s" % (
        len(missing), missing[:20])
    # More may be stored than acknowledged (committed, reply lost in the
    # kill), but only by the few that were in flight.
    assert len(stored) - len(acknowledged) <= STREAMS, (len(stored), len(acknowledged))

    # The store still takes mail and keeps UIDs going up.
    c = d.lmtp()
    _, _, data = lmtp_send(c, "s@example.org", ["alice@example.com"], b"Subject: after\r\n\r\nok\r\n")
    assert data["alice@example.com"][0] == 250
    c.quit()
    p = d.pop3("alice", "pw")
    assert p.stat()[0] == count + 1
    assert retr_bytes(p, count + 1) == b"Subject: after\r\n\r\nok\r\n"
    p.quit()


def test_restart_keeps_everything(daemon):
    """A clean stop and start keeps every message, in order."""
    c = daemon.lmtp()
    sent = []
    for i in range(50):
        m = b"Subject: keep %d\r\n\r\n" % i + make_body(i * 997, seed=i)
        _, _, data = lmtp_send(c, "s@example.org", ["bob@example.com"], m)
        assert data["bob@example.com"][0] == 250
        sent.append(lmtp_stored(m))
    c.quit()
    daemon.restart()
    assert daemon.messages("bob") == sent


# ------------------------------------------- kill -9 around other writes

# Where a kill lands after a command was sent: seconds to wait first, or
# None to read the answer and kill right after it.  Waits are only a way to
# spread the kills; no outcome depends on how long anything took.
KILL_POINTS = [0, 0.0005, 0.002, 0.01, 0.05, None]
MAX_LINES = 100_000       # bound on lines read while waiting for one answer


def kill_and_restart(d):
    d.kill9()
    d.start(fixed_ports=True)


def x_id(m):
    mo = re.match(rb"X-Id: (\S+)\r\n", m)
    assert mo, "a message we did not send: %r" % m[:200]
    return mo.group(1).decode()


def deliver_numbered(d, user, n, prefix="m", size=200):
    """N small messages with X-Id PREFIX0..PREFIX(N-1); {x-id: bytes}."""
    sent = {}
    c = d.lmtp()
    rcpt = user + "@example.com"
    for i in range(n):
        key = "%s%d" % (prefix, i)
        m = b"X-Id: %s\r\nSubject: %s\r\n\r\n" % (key.encode(), key.encode()) + make_body(
            size, seed=i, eightbit=False)
        _, _, after = lmtp_send(c, "s@example.org", [rcpt], m)
        assert after[rcpt][0] == 250, after
        sent[key] = lmtp_stored(m)
    c.quit()
    return sent


def imap_raw(d, user, password):
    """A raw IMAP connection, logged in."""
    c = d.conn(d.imap_port)
    assert c.readline().startswith(b"* OK"), "no greeting"
    c.send(b'l LOGIN %s "%s"\r\n' % (user.encode(), password.encode()))
    assert imap_wait(c, b"l").startswith(b"l OK")
    return c


def imap_wait(c, tag):
    """The tagged answer to TAG, or b'' if the connection ended first."""
    for _ in range(MAX_LINES):
        line = c.readline()
        if not line:
            return b""
        if line.startswith(tag + b" "):
            return line
        mo = re.search(rb"\{(\d+)\}\r\n$", line)
        if mo:
            c.read(int(mo.group(1)))
    raise AssertionError("no tagged answer to %r in %d lines" % (tag, MAX_LINES))


def kill_after_command(d, c, tag, point):
    """Kill the daemon at POINT after a command was sent on C; True if its
    tagged OK (IMAP) was read first."""
    ok = False
    if point is None:
        ok = imap_wait(c, tag).startswith(tag + b" OK")
    elif point:
        time.sleep(point)
    kill_and_restart(d)
    c.close()
    return ok


def imap_state(d, user, password, mailbox):
    """{x-id: set of flags} of MAILBOX over a fresh imaplib session."""
    c = d.imap(user, password)
    typ, data = c.select(mailbox, readonly=True)
    assert typ == "OK", data
    out = {}
    if int(data[0]) > 0:
        typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (X-Id)])")
        assert typ == "OK", data
        for item in data:
            if not isinstance(item, tuple):
                continue
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            assert flags, item
            key = re.search(rb"X-Id: (\S+)", item[1])
            assert key, item
            k = key.group(1).decode()
            assert k not in out, "%s twice in %s" % (k, mailbox)
            out[k] = set(flags.group(1).decode().split())
    c.logout()
    return out


def pop3_ids(d, user, password):
    """The X-Ids a new POP3 session lists, in order (TOP n 0 reads only the
    header and changes nothing)."""
    p = d.pop3(user, password)
    try:
        count, _ = p.stat()
        out = []
        for i in range(1, count + 1):
            resp, lines, _ = p.top(i, 0)
            assert resp.startswith(b"+OK"), resp
            out.append(x_id(b"".join(line + b"\r\n" for line in lines)))
        return out
    finally:
        p.quit()


def check_views_agree(d, user, password):
    """POP3 lists exactly the INBOX messages IMAP shows without \\Deleted."""
    inbox = imap_state(d, user, password, "INBOX")
    listed = pop3_ids(d, user, password)
    assert len(listed) == len(set(listed))
    assert set(listed) == {k for k, f in inbox.items() if "\\Deleted" not in f}, (
        sorted(listed), sorted(inbox))
    return inbox


def test_kill9_during_imap_append(daemon_factory):
    """A large APPEND killed in its literal is not stored; killed after the
    literal it is stored whole or not at all; killed right after its tagged
    OK it is there.  Never a part of it."""
    d = daemon_factory(users={"alice": "pw"})
    size = 3 << 20
    # (fraction of the literal sent, then seconds to wait or None to wait
    # for the tagged OK) before the kill.
    points = [(0.1, 0), (0.5, 0), (0.999, 0), (1.0, 0), (1.0, 0.05), (1.0, 0.3),
              (1.0, None)]
    sent, acked = {}, set()
    for rnd, (part, wait) in enumerate(points):
        key = "a%d" % rnd
        m = b"X-Id: %s\r\nSubject: append %d\r\n\r\n" % (key.encode(), rnd) + make_body(
            size, seed=300 + rnd)
        sent[key] = m
        c = imap_raw(d, "alice", "pw")
        c.send(b"b APPEND INBOX {%d}\r\n" % len(m))
        assert c.readline().startswith(b"+"), "no continuation"
        got_ok = False
        try:
            c.send(m[:int(len(m) * part)] if part < 1.0 else m + b"\r\n")
            if part == 1.0 and wait is None:
                got_ok = imap_wait(c, b"b").startswith(b"b OK")
                assert got_ok
                acked.add(key)
            elif wait:
                time.sleep(wait)
        except OSError:
            pass
        kill_and_restart(d)
        c.close()

        stored = d.messages("alice")
        keys = [x_id(s) for s in stored]
        assert len(keys) == len(set(keys)), keys
        for k, s in zip(keys, stored):
            assert s == sent[k], "%s stored torn: %d octets of %d" % (k, len(s), len(sent[k]))
        assert acked <= set(keys), (acked, keys)
        print("APPEND kill at %s/%s: ok=%s stored=%s" % (part, wait, got_ok, key in keys))
        if part < 1.0:
            assert key not in keys, "a half-sent APPEND was stored"


@pytest.mark.parametrize("op", ["COPY", "MOVE"])
def test_kill9_during_copy_or_move_of_many(daemon_factory, op):
    """UID COPY/MOVE of 400 messages, killed at varying points: the target
    holds all of them or none, and a MOVE leaves each message in exactly
    one of the two mailboxes; after a tagged OK, all of them moved."""
    d = daemon_factory(users={"alice": "pw"})
    every = set(deliver_numbered(d, "alice", 400))
    src = "INBOX"
    for rnd, point in enumerate(KILL_POINTS):
        dest = "Dest%d" % rnd
        im = d.imap("alice", "pw")
        assert im.create(dest)[0] == "OK"
        im.logout()
        c = imap_raw(d, "alice", "pw")
        c.send(b"s SELECT %s\r\n" % src.encode())
        assert imap_wait(c, b"s").startswith(b"s OK")
        c.send(b"c UID %s 1:* %s\r\n" % (op.encode(), dest.encode()))
        got_ok = kill_after_command(d, c, b"c", point)

        there = set(imap_state(d, "alice", "pw", dest))
        left = set(imap_state(d, "alice", "pw", src))
        assert there in (set(), every), "%s: %d of %d in the target" % (op, len(there),
                                                                         len(every))
        print("%s kill at %s: ok=%s done=%s" % (op, point, got_ok, bool(there)))
        if got_ok:
            assert there == every
        if op == "COPY":
            assert left == every
        else:
            assert left == every - there, (len(left), len(there))
            if there:
                src = dest
        check_views_agree(d, "alice", "pw")


def test_kill9_during_expunge(daemon_factory):
    """EXPUNGE of many \\Deleted messages, killed at varying points: they
    are all gone or all still there (still flagged), never some; after the
    tagged OK they are gone; POP3 lists exactly what IMAP shows unflagged."""
    d = daemon_factory(users={"alice": "pw"})
    present = set(deliver_numbered(d, "alice", 600))
    flagged = set()
    for rnd, point in enumerate(KILL_POINTS):
        im = d.imap("alice", "pw")
        im.select("INBOX")
        typ, data = im.search(None, "UNDELETED")
        nums = data[0].split()
        # About a sixth of what is left, spread over the mailbox.
        chosen = nums[rnd % 3::6]
        assert chosen
        for i in range(0, len(chosen), 100):
            typ, data = im.store(b",".join(chosen[i:i + 100]).decode(), "+FLAGS.SILENT",
                                 "(\\Deleted)")
            assert typ == "OK", data
        im.logout()
        before = imap_state(d, "alice", "pw", "INBOX")
        flagged = {k for k, f in before.items() if "\\Deleted" in f}
        assert set(before) == present

        c = imap_raw(d, "alice", "pw")
        c.send(b"s SELECT INBOX\r\n")
        assert imap_wait(c, b"s").startswith(b"s OK")
        c.send(b"e EXPUNGE\r\n")
        got_ok = kill_after_command(d, c, b"e", point)

        inbox = check_views_agree(d, "alice", "pw")
        gone = present - set(inbox)
        assert gone in (set(), flagged), "EXPUNGE half done: %d of %d gone" % (
            len(gone), len(flagged))
        print("EXPUNGE kill at %s: ok=%s done=%s" % (point, got_ok, bool(gone)))
        if got_ok:
            assert gone == flagged
        for k in flagged - gone:
            assert "\\Deleted" in inbox[k], k
        present -= gone


@pytest.mark.parametrize("mode", ["expunge", "flag", "trash"])
def test_kill9_during_pop3_quit(daemon_factory, mode):
    """POP3 DELE of some messages, then QUIT, killed at varying points:
    the deletions are applied (as pop3.delete_mode says) iff the +OK of
    QUIT came, or, when the kill beat the answer, all or none of them."""
    d = daemon_factory(users={"alice": "pw"}, pop3={"delete_mode": mode})
    every = set(deliver_numbered(d, "alice", 120))
    expunged = set()
    for rnd, point in enumerate(KILL_POINTS):
        listed = pop3_ids(d, "alice", "pw")
        doomed = {listed[i] for i in range(rnd % 2, len(listed), 7)}
        c = d.conn(d.pop3_port)
        assert c.readline().startswith(b"+OK")
        c.send(b"USER alice\r\n")
        assert c.readline().startswith(b"+OK")
        c.send(b"PASS pw\r\n")
        assert c.readline().startswith(b"+OK")
        for i in range(rnd % 2, len(listed), 7):
            c.send(b"DELE %d\r\n" % (i + 1))
            assert c.readline().startswith(b"+OK")
        c.send(b"QUIT\r\n")
        got_ok = False
        if point is None:
            got_ok = c.readline().startswith(b"+OK")
            assert got_ok
        elif point:
            time.sleep(point)
        kill_and_restart(d)
        c.close()

        inbox = check_views_agree(d, "alice", "pw")
        trash = imap_state(d, "alice", "pw", "Trash")
        untouched = all(k in inbox and "\\Deleted" not in inbox[k] and k not in trash
                        for k in doomed)
        if mode == "expunge":
            applied = all(k not in inbox and k not in trash for k in doomed)
        elif mode == "flag":
            applied = all(k in inbox and "\\Deleted" in inbox[k] for k in doomed)
        else:
            applied = all(k not in inbox and k in trash and "\\Deleted" not in trash[k]
                          for k in doomed)
        assert applied or untouched, "QUIT half applied (%s): %r" % (
            mode, {k: (inbox.get(k), trash.get(k)) for k in sorted(doomed)})
        print("QUIT (%s) kill at %s: ok=%s done=%s" % (mode, point, got_ok, applied))
        if got_ok:
            assert applied
        if mode == "expunge" and applied:
            expunged |= doomed
        # Nothing else changed: every message is in INBOX or Trash, once,
        # or expunged by a QUIT; those listed and not DELE'd are as were.
        assert set(inbox) | set(trash) | expunged == every
        assert not set(inbox) & set(trash) and not set(inbox) & expunged
        for k in set(listed) - doomed:
            assert k in inbox and "\\Deleted" not in inbox[k], k
