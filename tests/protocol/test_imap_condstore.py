"""
test_imap_condstore.py - CONDSTORE and QRESYNC (RFC 7162) over raw IMAP
commands (imaplib has no helper for ENABLE, SELECT parameters, VANISHED or
the MODIFIED code), and what they report of changes made by POP3: a RETR
that set \\Seen makes a conditional STORE fail with MODIFIED; DELEs are
reported as VANISHED (EARLIER) at a QRESYNC SELECT and as VANISHED to an
IDLE client.

The last test builds a mailbox of 100,000 messages (100 delivered over LMTP,
then doubled by UID COPY onto the same mailbox: one store request per COPY,
where every delivery is a request of its own), changes 10 of them over IMAP
and POP3, and checks that a
QRESYNC SELECT reports exactly those 10.  It checks correctness only; set
ONEBOX_SKIP_100K=1 to skip it where it takes too long.
"""

import os
import re
import time

import pytest

from conftest import CLIENT_TIMEOUT, RawImap, lmtp_send

PW = "alice-pw"


class Imap(RawImap):
    """RawImap numbering its own tags (c1, c2, ...), logged in as USER."""

    def __init__(self, daemon, user="alice", password=PW):
        super().__init__(daemon, timeout=CLIENT_TIMEOUT)
        assert self.greeting.startswith("* OK"), self.greeting
        self.n = 0
        if user is not None:
            _, t = self.cmd("LOGIN %s %s" % (user, password))
            assert " OK " in t, t

    def cmd(self, text):
        """Send TEXT under a new tag: (untagged lines, tagged line)."""
        self.n += 1
        return super().cmd("c%d" % self.n, text)

    def ok(self, text):
        unt, t = self.cmd(text)
        assert re.match(r"^c\d+ OK", t), (text, t, unt[-5:])
        return unt, t

    def close(self):
        try:
            self.cmd("LOGOUT")
        except (OSError, EOFError):
            pass
        self.f.close()
        self.sock.close()


def code(lines, name):
    """The argument of response code NAME in LINES (a list or one line)."""
    if isinstance(lines, str):
        lines = [lines]
    for ln in lines:
        m = re.search(r"\[" + name + r"(?: ([^\]]*))?\]", ln)
        if m:
            return m.group(1)
    raise AssertionError("no [%s] in %r" % (name, lines))


def expand(s):
    """A sequence set as a sorted list of numbers."""
    out = []
    for part in s.split(","):
        if ":" in part:
            a, b = sorted(int(x) for x in part.split(":"))
            out += range(a, b + 1)
        else:
            out.append(int(part))
    return sorted(out)


FETCH_RE = re.compile(r"^\* (\d+) FETCH \((.*)\)$")


def fetches(lines):
    """{uid: {'seq', 'flags', 'modseq'}} of the FETCH lines in LINES that
    carry a UID (all but those answering a FETCH without UID)."""
    out = {}
    for ln in lines:
        m = FETCH_RE.match(ln)
        if not m:
            continue
        body = m.group(2)
        u = re.search(r"\bUID (\d+)", body)
        if not u:
            continue
        f = re.search(r"\bFLAGS \(([^)]*)\)", body)
        ms = re.search(r"\bMODSEQ \((\d+)\)", body)
        out[int(u.group(1))] = {
            "seq": int(m.group(1)),
            "flags": set(f.group(1).split()) - {"\\Recent"} if f else None,
            "modseq": int(ms.group(1)) if ms else None,
        }
    return out


def vanished(lines, earlier):
    """The UIDs of the VANISHED lines of LINES of the given form."""
    out = []
    for ln in lines:
        if ln.startswith("* VANISHED (EARLIER) "):
            if earlier:
                out += expand(ln[len("* VANISHED (EARLIER) "):])
        elif ln.startswith("* VANISHED "):
            if not earlier:
                out += expand(ln[len("* VANISHED "):])
    return sorted(out)


def deliver(daemon, n, user="alice"):
    with daemon.lmtp() as l:
        for i in range(n):
            msg = ("Subject: m%d\r\nFrom: s@example.net\r\n\r\nbody %d\r\n" % (i, i)).encode()
            _, _, data = lmtp_send(l, "s@example.net", [user + "@example.com"], msg)
            assert data[user + "@example.com"][0] == 250, data


def select(c, args=""):
    unt, t = c.ok("SELECT INBOX" + args)
    return unt, int(code(unt, "UIDVALIDITY")), int(code(unt, "HIGHESTMODSEQ"))


def status_modseq(c):
    unt, _ = c.ok("STATUS INBOX (HIGHESTMODSEQ MESSAGES)")
    line = [ln for ln in unt if ln.startswith("* STATUS ")][0]
    return int(re.search(r"HIGHESTMODSEQ (\d+)", line).group(1))


# ------------------------------------------------------------ ENABLE, CAPABILITY

def test_capability_and_enable(daemon):
    deliver(daemon, 2)
    c = Imap(daemon, user=None)
    unt, _ = c.ok("CAPABILITY")
    caps = unt[0].split()
    assert "CONDSTORE" in caps and "QRESYNC" in caps and "ENABLE" in caps
    c.ok("LOGIN alice " + PW)

    # QRESYNC and VANISHED need ENABLE QRESYNC first (RFC 7162 §3.2.3).
    _, t = c.cmd("SELECT INBOX (QRESYNC (1 1))")
    assert " BAD " in t, t
    c.ok("SELECT INBOX")
    _, t = c.cmd("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert " BAD " in t, t
    c.ok("UNSELECT")

    unt, _ = c.ok("ENABLE QRESYNC")
    assert unt == ["* ENABLED QRESYNC"]
    unt, _ = c.ok("ENABLE CONDSTORE QRESYNC X-UNKNOWN")
    assert unt == ["* ENABLED"]                 # already on: nothing new
    c.close()

    c = Imap(daemon)
    unt, _ = c.ok("ENABLE CONDSTORE QRESYNC")
    assert unt == ["* ENABLED CONDSTORE QRESYNC"]
    c.close()

    # CONDSTORE alone; SELECT (CONDSTORE) is an enabling command too.
    c = Imap(daemon)
    unt, _ = c.ok("ENABLE CONDSTORE")
    assert unt == ["* ENABLED CONDSTORE"]
    c.close()
    c = Imap(daemon)
    unt, t = c.ok("SELECT INBOX (CONDSTORE)")
    assert code(unt, "HIGHESTMODSEQ")
    other = Imap(daemon)
    other.ok("SELECT INBOX")
    other.ok("STORE 2 +FLAGS (\\Flagged)")
    other.close()
    unt, _ = c.ok("NOOP")
    f = fetches(unt)                            # UID and MODSEQ (§3.2.4)
    assert list(f) == [2] and f[2]["flags"] == {"\\Flagged"} and f[2]["modseq"]
    c.close()


def test_enabling_command_reports_highestmodseq(daemon):
    deliver(daemon, 2)
    c = Imap(daemon)
    _, _, h = select(c)
    other = Imap(daemon)
    other.ok("SELECT INBOX")
    other.ok("STORE 1 +FLAGS (\\Seen)")
    other.close()
    # The first enabling command with a mailbox selected (RFC 7162 §3.1).
    unt, _ = c.ok("FETCH 2 (MODSEQ)")
    assert int(code(unt, "HIGHESTMODSEQ")) == h
    assert any(re.match(r"^\* 2 FETCH \(.*MODSEQ \(\d+\)", ln) for ln in unt), unt
    # The change by the other session comes with UID and MODSEQ.
    f = fetches(unt)
    assert f[1]["flags"] == {"\\Seen"} and f[1]["modseq"] > h
    unt, _ = c.ok("FETCH 2 (MODSEQ)")
    assert not any("HIGHESTMODSEQ" in ln for ln in unt)   # only the first time
    c.close()


# --------------------------------------------------- HIGHESTMODSEQ, FETCH

def test_highestmodseq_in_select_and_status_grows(daemon):
    deliver(daemon, 3)
    c = Imap(daemon)
    h0 = status_modseq(c)
    unt, _, h = select(c)
    assert h == h0
    c.ok("STORE 1 +FLAGS (\\Flagged)")
    h1 = status_modseq(c)
    assert h1 > h0
    c.ok("STORE 1 +FLAGS (\\Flagged)")          # changes nothing (§3.1.11)
    assert status_modseq(c) == h1
    deliver(daemon, 1)
    h2 = status_modseq(c)
    assert h2 > h1
    # Selecting again: [CLOSED] first (§3.2.11), then the new value.
    unt, _, h = select(c)
    assert unt[0].startswith("* OK [CLOSED]"), unt
    assert h == h2
    unt, _ = c.ok("EXAMINE INBOX")
    assert int(code(unt, "HIGHESTMODSEQ")) == h2
    c.close()


def test_fetch_modseq_and_changedsince(daemon):
    deliver(daemon, 6)
    c = Imap(daemon)
    select(c)
    unt, _ = c.ok("FETCH 1:* (MODSEQ)")
    seqs = [int(re.search(r"MODSEQ \((\d+)\)", ln).group(1)) for ln in unt if " FETCH " in ln]
    assert len(seqs) == 6 and seqs == sorted(seqs) and len(set(seqs)) == 6
    h = status_modseq(c)

    other = Imap(daemon)
    other.ok("SELECT INBOX")
    other.ok("UID STORE 2 +FLAGS (\\Answered)")
    other.ok("UID STORE 5 +FLAGS (\\Flagged $Work)")
    other.ok("UID STORE 6 -FLAGS (\\Flagged)")   # changes nothing
    other.close()

    unt, _ = c.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % h)
    f = fetches(unt)
    assert sorted(f) == [2, 5], unt
    assert f[2]["flags"] == {"\\Answered"} and f[5]["flags"] == {"\\Flagged", "$Work"}
    assert all(x["modseq"] > h for x in f.values())
    # Nothing changed since the last of them.
    top = max(x["modseq"] for x in f.values())
    unt, _ = c.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % top)
    assert not [ln for ln in unt if " FETCH " in ln]
    # FETCH by number with CHANGEDSINCE, MODSEQ implied.
    unt, _ = c.ok("FETCH 1:6 (UID) (CHANGEDSINCE %d)" % h)
    assert sorted(fetches(unt)) == [2, 5]
    # SEARCH MODSEQ: the matches and their highest modseq (§3.1.5).
    unt, _ = c.ok("UID SEARCH MODSEQ %d" % (h + 1))
    m = re.match(r"^\* SEARCH ([\d ]+) \(MODSEQ (\d+)\)$", unt[-1])
    assert m and m.group(1).split() == ["2", "5"] and int(m.group(2)) == top, unt
    c.close()


# ---------------------------------------------------------- UNCHANGEDSINCE

def test_store_unchangedsince(daemon):
    deliver(daemon, 4)
    c = Imap(daemon)
    select(c)
    unt, _ = c.ok("FETCH 1:* (MODSEQ)")
    ms = {int(ln.split()[1]): int(re.search(r"MODSEQ \((\d+)\)", ln).group(1))
          for ln in unt if " FETCH " in ln}

    # Passes: even .SILENT answers the new MODSEQ (§3.1.3).
    unt, t = c.ok("STORE 1 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Flagged)" % ms[1])
    assert "MODIFIED" not in t
    f = fetches(unt)
    assert list(f) == [1] and f[1]["modseq"] > ms[1] and f[1]["flags"] is None, unt

    # Message 1 is now newer than its old modseq: only it fails, by number.
    unt, t = c.ok("STORE 1:4 (UNCHANGEDSINCE %d) +FLAGS (\\Answered)" % ms[4])
    assert code(t, "MODIFIED") == "1", t
    f = fetches(unt)
    assert f[1]["flags"] == {"\\Flagged"}         # its flags, told at once
    for u in (2, 3, 4):
        assert f[u]["flags"] == {"\\Answered"} and f[u]["modseq"] > ms[4]

    # UID STORE names UIDs; UNCHANGEDSINCE 0 always fails (§3.1.3).
    unt, t = c.ok("UID STORE 2:3 (UNCHANGEDSINCE 0) +FLAGS.SILENT ($x)")
    assert expand(code(t, "MODIFIED")) == [2, 3]
    unt, _ = c.ok("FETCH 2:3 (FLAGS)")
    assert all("$x" not in ln for ln in unt)
    c.close()


def test_unchangedsince_fails_after_pop3_retr(daemon):
    deliver(daemon, 2)
    c = Imap(daemon)
    select(c)
    unt, _ = c.ok("UID FETCH 1 (FLAGS MODSEQ)")
    f = fetches(unt)
    assert f[1]["flags"] == set()
    old = f[1]["modseq"]

    p = daemon.pop3("alice", PW)
    p.retr(1)
    p.quit()                                     # RETR sets \Seen at QUIT

    unt, t = c.ok("UID STORE 1 (UNCHANGEDSINCE %d) +FLAGS (\\Answered)" % old)
    assert code(t, "MODIFIED") == "1", (t, unt)
    f = fetches(unt)
    assert f[1]["flags"] == {"\\Seen"} and f[1]["modseq"] > old
    unt, _ = c.ok("UID FETCH 1 (FLAGS)")
    assert "\\Answered" not in unt[0] and "\\Seen" in unt[0]
    # With the modseq it was told, the client's retry passes.
    unt, t = c.ok("UID STORE 1 (UNCHANGEDSINCE %d) +FLAGS (\\Answered)" % f[1]["modseq"])
    assert "MODIFIED" not in t
    assert fetches(unt)[1]["flags"] == {"\\Seen", "\\Answered"}
    c.close()


# ------------------------------------------------------------------ QRESYNC

def test_qresync_after_pop3_delete(daemon):
    deliver(daemon, 6)
    c = Imap(daemon)
    c.ok("ENABLE QRESYNC")
    _, uv, h = select(c)
    c.close()

    p = daemon.pop3("alice", PW)
    p.dele(2)
    p.dele(5)
    p.retr(3)
    p.quit()

    c = Imap(daemon)
    c.ok("ENABLE QRESYNC")
    unt, uv2, h2 = select(c, " (QRESYNC (%d %d))" % (uv, h))
    assert uv2 == uv and h2 > h
    assert vanished(unt, earlier=True) == [2, 5], unt
    f = fetches(unt)
    assert list(f) == [3] and f[3]["flags"] == {"\\Seen"} and f[3]["modseq"] > h
    assert f[3]["seq"] == 2
    v = [i for i, ln in enumerate(unt) if ln.startswith("* VANISHED")]
    assert v and v[0] < [i for i, ln in enumerate(unt) if " FETCH " in ln][0]
    assert not any(re.match(r"^\* \d+ EXPUNGE", ln) for ln in unt)
    assert "* 4 EXISTS" in unt

    # Known UIDs restrict the report (§3.2.5.1); sequence match data is
    # accepted.
    unt, _, _ = select(c, " (QRESYNC (%d %d 1:4 (1:2 1,3)))" % (uv, h))
    assert unt[0].startswith("* OK [CLOSED]")
    assert vanished(unt, earlier=True) == [2] and list(fetches(unt)) == [3]
    # Up to date: nothing to report.
    unt, _, _ = select(c, " (QRESYNC (%d %d))" % (uv, h2))
    assert not vanished(unt, earlier=True) and not fetches(unt)
    # Another UIDVALIDITY: the client's cache is void; nothing reported.
    unt, _, _ = select(c, " (QRESYNC (%d %d))" % (uv + 1, h))
    assert not vanished(unt, earlier=True) and not fetches(unt)

    # The same through UID FETCH ... (CHANGEDSINCE h VANISHED) (§3.2.6).
    unt, _ = c.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % h)
    assert vanished(unt, earlier=True) == [2, 5]
    assert list(fetches(unt)) == [3]
    unt, _ = c.ok("UID FETCH 3:4 (FLAGS) (CHANGEDSINCE %d VANISHED)" % h)
    assert not vanished(unt, earlier=True) and list(fetches(unt)) == [3]
    c.close()


def test_vanished_instead_of_expunge(daemon):
    deliver(daemon, 5)
    idler = Imap(daemon)
    idler.ok("ENABLE QRESYNC")
    select(idler)
    idler.n += 1
    idler.send("c%d IDLE\r\n" % idler.n)
    assert idler.line().startswith("+ ")

    # An IMAP expunge in another session, reported as VANISHED at once.
    other = Imap(daemon)
    other.ok("ENABLE QRESYNC")
    other.ok("SELECT INBOX")
    other.ok("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    unt, t = other.ok("EXPUNGE")
    assert unt == ["* VANISHED 2"], unt
    assert int(code(t, "HIGHESTMODSEQ")) == status_modseq(other)
    # FETCH responses pushed to the idler carry UID and MODSEQ; the
    # expunge is a VANISHED without EARLIER, never "n EXPUNGE".
    got = []
    while "* VANISHED 2" not in got:
        got.append(idler.line())
    assert not any(re.match(r"^\* \d+ EXPUNGE", ln) for ln in got), got

    # A POP3 client's delete reaches the idler the same way.
    p = daemon.pop3("alice", PW)
    p.dele(3)                                    # UID 4 (UID 2 is gone)
    p.quit()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ln = idler.line()
        got.append(ln)
        if ln.startswith("* VANISHED") and ln != "* VANISHED 2":
            break
    assert got[-1] == "* VANISHED 4", got
    idler.send("DONE\r\n")
    _, t = idler.until("c%d" % idler.n)
    assert " OK " in t
    unt, _ = idler.ok("UID SEARCH ALL")
    assert unt[-1] == "* SEARCH 1 3 5"
    other.close()
    idler.close()


def test_uid_expunge_vanished_and_moves(daemon):
    deliver(daemon, 4)
    c = Imap(daemon)
    c.ok("ENABLE QRESYNC")
    _, uv, h = select(c)
    c.ok("UID STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    unt, t = c.ok("UID EXPUNGE 1:2")
    assert unt == ["* VANISHED 1:2"], unt
    h2 = int(code(t, "HIGHESTMODSEQ"))
    unt, _ = c.ok("UID MOVE 3 Trash")
    assert "* VANISHED 3" in unt and not any(" EXPUNGE" in ln for ln in unt), unt
    unt, _ = c.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % h2)
    assert vanished(unt, earlier=True) == [3]
    c.close()


# ------------------------------------------------------- 100,000 messages

def build_mailbox(daemon, total, seed=100):
    """TOTAL messages in alice's INBOX, fast: SEED distinct messages over
    LMTP, then UID COPY of the mailbox onto itself, doubling it each time
    (the last copy tops it up to exactly TOTAL).  A COPY is one store
    request however many messages it names, committed at once, while every
    delivery is a request of its own; the copies share their bodies."""
    deliver(daemon, seed)
    c = Imap(daemon)
    c.ok("SELECT INBOX")
    have = seed
    while have < total:
        n = min(have, total - have)
        unt, t = c.ok("UID COPY 1:%d INBOX" % n)
        have += n
        assert "* %d EXISTS" % have in unt, (t, unt[-3:])
    c.close()


@pytest.mark.skipif(os.environ.get("ONEBOX_SKIP_100K") == "1",
                    reason="ONEBOX_SKIP_100K=1: the 100,000-message QRESYNC test is skipped")
def test_qresync_100k_messages_ten_changes(daemon_factory):
    total = 100_000
    d = daemon_factory()
    build_mailbox(d, total)

    c = Imap(d)
    c.ok("ENABLE QRESYNC")
    unt, uv, h = select(c)
    assert "* %d EXISTS" % total in unt
    c.close()

    # Ten changes, mixed: IMAP flags on four messages, IMAP expunges of
    # two, POP3 RETR (\Seen) of two and POP3 DELE (expunge at QUIT) of two.
    imap_flagged = [17, 5000, 50001, 99999]
    imap_expunged = [3, 77777]
    c = Imap(d)
    c.ok("SELECT INBOX")
    c.ok("UID STORE 17 +FLAGS.SILENT (\\Flagged)")
    c.ok("UID STORE 5000 +FLAGS.SILENT (\\Answered $Done)")
    c.ok("UID STORE 50001 +FLAGS.SILENT (\\Seen)")
    c.ok("UID STORE 99999 +FLAGS.SILENT (\\Draft)")
    c.ok("UID STORE 3,77777 +FLAGS.SILENT (\\Deleted)")
    c.ok("UID EXPUNGE 3,77777")
    c.close()

    # POP3 numbers count the messages still there: UID u is message u
    # less the expunged UIDs below it.
    pop_seen = [1000, 60000]
    pop_deleted = [2, 88888]

    def pop_number(u):
        return u - sum(1 for x in imap_expunged if x < u)
    p = d.pop3("alice", PW)
    count, _ = p.stat()
    assert count == total - 2
    for u in pop_seen:
        p.retr(pop_number(u))
    for u in pop_deleted:
        p.dele(pop_number(u))
    p.quit()

    c = Imap(d)
    c.ok("ENABLE QRESYNC")
    unt, uv2, h2 = select(c, " (QRESYNC (%d %d))" % (uv, h))
    assert uv2 == uv and h2 > h
    assert "* %d EXISTS" % (total - 4) in unt
    assert vanished(unt, earlier=True) == sorted(imap_expunged + pop_deleted)
    f = fetches(unt)
    assert sorted(f) == sorted(imap_flagged + pop_seen), sorted(f)
    assert f[17]["flags"] == {"\\Flagged"}
    assert f[5000]["flags"] == {"\\Answered", "$Done"}
    assert f[50001]["flags"] == {"\\Seen"}
    assert f[99999]["flags"] == {"\\Draft"}
    assert f[1000]["flags"] == {"\\Seen"} and f[60000]["flags"] == {"\\Seen"}
    assert all(h < x["modseq"] <= h2 for x in f.values())
    # Sequence numbers are those of the mailbox after the expunges.
    assert f[17]["seq"] == 15 and f[99999]["seq"] == 99999 - 4
    # And the untagged data is no bigger than the changes.
    assert len(unt) < 30, len(unt)
    c.close()
