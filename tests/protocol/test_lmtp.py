"""
LMTP (RFC 2033) with smtplib.LMTP and raw sockets: capabilities, per-recipient
replies, address resolution (DESIGN §4), command order, size limit,
pipelining, the unix socket, and delivery to several users at once.
What was stored is always read back over POP3.
"""

import random
import re
import smtplib
import socket
import threading
import time

import pytest

from conftest import Replies, crlf, lmtp_send, lmtp_stored, retr_bytes, uidl_map


def msg(subject, body=b"hello\r\n"):
    return (b"From: sender@example.org\r\nTo: someone@example.com\r\nSubject: "
            + subject.encode() + b"\r\n\r\n" + body)


def test_lhlo_capabilities(daemon_factory):
    d = daemon_factory(lmtp={"max_message_size": 1234567})
    c = d.lmtp()
    code, _ = c.ehlo("client.example")   # smtplib.LMTP sends LHLO
    assert code == 250
    feats = c.esmtp_features
    for cap in ("pipelining", "enhancedstatuscodes", "8bitmime", "size"):
        assert cap in feats, "LHLO lacks %s: %r" % (cap, feats)
    assert feats["size"].strip() == "1234567"
    assert c.quit()[0] == 221


def test_greeting_is_220_and_helo_ehlo_are_not_lmtp(daemon):
    c = smtplib.LMTP()
    code, _ = c.connect("127.0.0.1", daemon.lmtp_port)
    assert code == 220
    # RFC 2033 §4.1: HELO and EHLO MUST NOT get a positive reply.
    assert c.docmd("EHLO", "client.example")[0] // 100 in (4, 5)
    assert c.docmd("HELO", "client.example")[0] // 100 in (4, 5)
    assert c.docmd("LHLO", "client.example")[0] == 250
    c.quit()


def test_deliver_per_recipient_replies(daemon):
    c = daemon.lmtp()
    m = msg("mixed recipients")
    mail, rcpt, data = lmtp_send(c, "sender@example.org",
                                 ["alice@example.com", "nobody@example.com", "bob@example.com"], m)
    assert mail[0] == 250
    assert rcpt["alice@example.com"][0] == 250
    assert rcpt["bob@example.com"][0] == 250
    code, text = rcpt["nobody@example.com"]
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)
    # One reply after DATA per accepted recipient, and only those.
    assert sorted(data) == ["alice@example.com", "bob@example.com"]
    assert all(r[0] == 250 for r in data.values()), data
    assert c.noop()[0] == 250   # the stream is in step: no extra reply queued
    c.quit()
    assert daemon.messages("alice") == [lmtp_stored(m)]
    assert daemon.messages("bob") == [lmtp_stored(m)]


def test_all_recipients_unknown_then_data_is_503(daemon):
    c = daemon.lmtp()
    c.ehlo()
    assert c.mail("sender@example.org")[0] == 250
    assert c.rcpt("nobody@example.com")[0] == 550
    # RFC 2033 §4.2: DATA without a successful RCPT fails with 503.
    assert c.docmd("DATA")[0] == 503
    c.quit()
    assert daemon.messages("alice") == []


def test_address_resolution(daemon_factory):
    users = {"alice": "a-pw", "bob@example.com": "b-pw",
             "carol": "c-pw", "carol@example.com": "c2-pw"}
    d = daemon_factory(users=users)
    c = d.lmtp()
    sent = {}
    for rcpt, user in [("alice@example.com", "alice"),          # no user alice@example.com
                       ("alice+lists@example.com", "alice"),    # +detail ignored
                       ("bob@example.com", "bob@example.com"),  # full address exists
                       ("bob+x@example.com", "bob@example.com"),
                       ("carol@example.com", "carol@example.com"),  # full name wins
                       ("carol+y@other.example", "carol")]:     # no carol@other.example
        m = msg("for " + rcpt)
        mail, rr, data = lmtp_send(c, "s@example.org", [rcpt], m)
        assert rr[rcpt][0] == 250, (rcpt, rr)
        assert data[rcpt][0] == 250, (rcpt, data)
        sent.setdefault(user, []).append(lmtp_stored(m))
    assert c.mail("s@example.org")[0] == 250
    code, text = c.rcpt("bob+x@other.example")
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)   # no bob, no bob@other.example
    c.quit()
    for user in users:
        assert d.messages(user) == sent.get(user, []), user


def test_null_sender_and_8bitmime(daemon):
    c = daemon.lmtp()
    m = msg("bounce", "Grüße, 8 bit: \u00e9\u00e8\r\n".encode("utf-8"))
    mail, rr, data = lmtp_send(c, "", ["alice@example.com"], m, mail_options=["BODY=8BITMIME"])
    assert mail[0] == 250, mail
    assert data["alice@example.com"][0] == 250
    c.quit()
    assert daemon.messages("alice") == [lmtp_stored(m)]


def test_rset_and_noop(daemon):
    c = daemon.lmtp()
    c.ehlo()
    assert c.noop()[0] == 250
    assert c.mail("sender@example.org")[0] == 250
    assert c.rcpt("alice@example.com")[0] == 250
    assert c.rset()[0] == 250
    # The transaction is gone: RCPT needs a new MAIL.
    assert c.rcpt("alice@example.com")[0] == 503
    assert c.noop()[0] == 250
    # And a new transaction works on the same connection.
    m = msg("after rset")
    mail, rr, data = lmtp_send(c, "sender@example.org", ["alice@example.com"], m)
    assert data == {"alice@example.com": data["alice@example.com"]}
    assert data["alice@example.com"][0] == 250
    c.quit()
    assert daemon.messages("alice") == [lmtp_stored(m)]


def test_out_of_order_commands_get_503(daemon):
    c = daemon.lmtp()
    c.ehlo()
    assert c.docmd("RCPT", "TO:<alice@example.com>")[0] == 503   # RCPT before MAIL
    assert c.docmd("DATA")[0] == 503                             # DATA before MAIL
    assert c.mail("s@example.org")[0] == 250
    assert c.docmd("MAIL", "FROM:<t@example.org>")[0] == 503     # nested MAIL
    assert c.docmd("DATA")[0] == 503                             # DATA before RCPT
    assert c.rcpt("alice@example.com")[0] == 250
    assert c.noop()[0] == 250
    c.quit()
    assert daemon.messages("alice") == []


def test_max_recipients(daemon_factory):
    d = daemon_factory(users={"u1": "p", "u2": "p", "u3": "p"}, lmtp={"max_recipients": 2})
    c = d.lmtp()
    m = msg("three recipients, two allowed")
    mail, rr, data = lmtp_send(c, "s@example.org", ["u1@x.example", "u2@x.example", "u3@x.example"], m)
    assert rr["u1@x.example"][0] == 250 and rr["u2@x.example"][0] == 250
    # RFC 5321 §4.5.3.1.10: 452 (a client must also accept 552).
    assert rr["u3@x.example"][0] in (452, 552), rr
    assert sorted(data) == ["u1@x.example", "u2@x.example"]
    c.quit()
    assert d.messages("u1") == [lmtp_stored(m)]
    assert d.messages("u2") == [lmtp_stored(m)]
    assert d.messages("u3") == []


def test_oversize_declared_with_size(daemon_factory):
    d = daemon_factory(lmtp={"max_message_size": 65536})
    c = d.lmtp()
    c.ehlo()
    big = msg("too big", b"x" * 100 + b"\r\n") * 1000   # ~150 KB
    code, text = c.mail("s@example.org", ["SIZE=%d" % len(big)])
    if code == 250:
        # Accepted at MAIL: then the data must be refused, per recipient.
        assert c.rcpt("alice@example.com")[0] == 250
        code, text = c.data(big)
    assert code == 552, (code, text)
    c.rset()
    # The session goes on, and nothing was stored.
    small = msg("small")
    _, _, data = lmtp_send(c, "s@example.org", ["alice@example.com"], small)
    assert data["alice@example.com"][0] == 250
    c.quit()
    assert d.messages("alice") == [lmtp_stored(small)]


def test_oversize_undeclared_gets_552_per_recipient(daemon_factory):
    d = daemon_factory(lmtp={"max_message_size": 65536})
    c = d.lmtp()
    c.ehlo()
    big = msg("too big", (b"y" * 998 + b"\r\n") * 200)   # ~200 KB, no SIZE= given
    assert c.mail("s@example.org")[0] == 250
    assert c.rcpt("alice@example.com")[0] == 250
    assert c.rcpt("bob@example.com")[0] == 250
    first = c.data(big)
    second = c.getreply()
    assert first[0] == 552 and second[0] == 552, (first, second)
    assert c.noop()[0] == 250
    # Exactly at the limit is fine.
    exact = msg("exact")
    exact += b"z" * (65536 - len(exact) - 2) + b"\r\n"
    assert len(exact) == 65536
    _, _, data = lmtp_send(c, "s@example.org", ["alice@example.com"], exact)
    assert data["alice@example.com"][0] == 250
    c.quit()
    assert d.messages("alice") == [exact]
    assert d.messages("bob") == []


def test_pipelining_raw(daemon):
    s = daemon.raw(daemon.lmtp_port)
    r = Replies(s)
    assert r.reply()[0] == 220
    s.sendall(b"LHLO pipe.example\r\n")
    code, lines = r.reply()
    assert code == 250 and b"PIPELINING" in [l.upper() for l in lines]
    # RFC 2920: a group of commands in one write, replies in order.
    s.sendall(b"MAIL FROM:<s@example.org>\r\n"
              b"RCPT TO:<alice@example.com>\r\n"
              b"RCPT TO:<nobody@example.com>\r\n"
              b"RCPT TO:<bob@example.com>\r\n"
              b"DATA\r\n")
    codes = [r.reply()[0] for _ in range(5)]
    assert codes == [250, 250, 550, 250, 354], codes
    body = b"Subject: pipelined\r\n\r\n..a line with a leading dot\r\nend\r\n"
    # End of data, then more commands in the same write.
    s.sendall(body + b".\r\nRSET\r\nNOOP\r\nMAIL FROM:<s2@example.org>\r\nRCPT TO:<bob@example.com>\r\nQUIT\r\n")
    codes = [r.reply()[0] for _ in range(7)]
    assert codes == [250, 250, 250, 250, 250, 250, 221], codes
    assert r.line() is None    # closed after QUIT
    s.close()
    want = b"Subject: pipelined\r\n\r\n.a line with a leading dot\r\nend\r\n"
    assert daemon.messages("alice") == [want]
    assert daemon.messages("bob") == [want]


def test_empty_message_raw(daemon):
    """A DATA of no octets at all (smtplib cannot send one)."""
    s = daemon.raw(daemon.lmtp_port)
    r = Replies(s)
    assert r.reply()[0] == 220
    s.sendall(b"LHLO e.example\r\n")
    assert r.reply()[0] == 250
    s.sendall(b"MAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
    assert [r.reply()[0] for _ in range(3)] == [250, 250, 354]
    s.sendall(b".\r\nQUIT\r\n")
    assert r.reply()[0] == 250
    assert r.reply()[0] == 221
    s.close()
    assert daemon.messages("alice") == [b""]


def test_unix_socket_delivery(daemon):
    c = daemon.lmtp_unix()
    m = msg("over the unix socket")
    _, rr, data = lmtp_send(c, "s@example.org", ["bob@example.com"], m)
    assert data["bob@example.com"][0] == 250
    c.quit()
    assert daemon.messages("bob") == [lmtp_stored(m)]


def test_same_user_twice_gets_two_replies(daemon):
    """RFC 2033 §4.2: one reply per successful RCPT, even for the same
    forward-path (here: the same address, and a +detail of it)."""
    c = daemon.lmtp()
    m = msg("twice")
    c.ehlo()
    assert c.mail("s@example.org")[0] == 250
    assert c.rcpt("alice@example.com")[0] == 250
    assert c.rcpt("alice@example.com")[0] == 250
    assert c.rcpt("alice+x@example.com")[0] == 250
    replies = [c.data(m), c.getreply(), c.getreply()]
    assert [r[0] for r in replies] == [250, 250, 250], replies
    assert c.noop()[0] == 250
    c.quit()
    got = daemon.messages("alice")
    assert got and all(g == lmtp_stored(m) for g in got)


def test_one_message_three_users(daemon_factory):
    users = {"ann": "1", "ben": "2", "cat": "3", "dan": "4"}
    d = daemon_factory(users=users)
    c = d.lmtp()
    m = msg("to three", b"shared body\r\n" * 1000)
    _, rr, data = lmtp_send(c, "s@example.org",
                            ["ann@example.com", "ben@example.com", "cat@example.com"], m)
    assert [data[r][0] for r in ("ann@example.com", "ben@example.com", "cat@example.com")] == [250] * 3
    c.quit()
    for u in ("ann", "ben", "cat"):
        assert d.messages(u) == [lmtp_stored(m)], u
    assert d.messages("dan") == []


def test_many_messages_one_session(daemon):
    c = daemon.lmtp()
    sent = []
    for i in range(30):
        m = msg("number %d" % i, (b"line %d\r\n" % i) * i)
        _, _, data = lmtp_send(c, "s@example.org", ["alice@example.com"], m)
        assert data["alice@example.com"][0] == 250
        sent.append(lmtp_stored(m))
    c.quit()
    assert daemon.messages("alice") == sent


def test_large_messages_sharing_a_prefix_stay_distinct(daemon):
    """Bodies are shared when the bytes are the same (the store compares
    recent bodies it finds by a fingerprint): three senders at once,
    messages of about 700 KB alike but for their last line, and one sent
    twice, must each be read back as sent, never as another's bytes."""
    prefix = b"".join(b"shared line %06d with bare LF\n" % i for i in range(22000))
    def make(tag):
        return msg("prefix", prefix + b"tail " + tag.encode() + b"\r\n")
    plan = {0: ["a0", "a1"], 1: ["b0", "a0"], 2: ["c0", "c1"]}
    errors = []

    def sender(k):
        try:
            c = daemon.lmtp()
            for tag in plan[k]:
                _, _, data = lmtp_send(c, "s@example.org", ["alice@example.com"], make(tag))
                if data.get("alice@example.com", (0,))[0] != 250:
                    errors.append((tag, data))
            c.quit()
        except Exception as e:      # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=sender, args=(k,)) for k in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    want = sorted(lmtp_stored(make(tag)) for tags in plan.values() for tag in tags)
    assert sorted(daemon.messages("alice")) == want


def test_quit_closes(daemon):
    s = daemon.raw(daemon.lmtp_port)
    r = Replies(s)
    assert r.reply()[0] == 220
    s.sendall(b"QUIT\r\n")
    assert r.reply()[0] == 221
    assert r.line() is None
    s.close()


@pytest.mark.parametrize("rcpt", ["<>", "<alice@example.com", ""])
def test_malformed_rcpt_is_5xx(daemon, rcpt):
    c = daemon.lmtp()
    c.ehlo()
    assert c.mail("s@example.org")[0] == 250
    code, _ = c.docmd("RCPT", ("TO:" + rcpt) if rcpt else "")
    assert 500 <= code < 600, code
    assert c.noop()[0] == 250
    c.quit()


def send_in_pieces(s, data, rnd, cuts=()):
    """Send DATA in small writes (1 to 7 octets, and cut at each offset in
    CUTS) with Nagle off and a pause, so the daemon reads it in pieces."""
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    points = sorted(set(cuts) | set(range(0, len(data), 1 + rnd.randrange(7))))
    points = [p for p in points if 0 < p < len(data)] + [len(data)]
    start = 0
    for p in points:
        s.sendall(data[start:p])
        start = p
        time.sleep(0.001)


def test_data_split_across_reads(daemon):
    """Line ends, dot-stuffing and the final dot split over several reads:
    a CR at the end of one read and its LF at the start of the next is one
    CRLF, not two line ends."""
    rnd = random.Random(9)
    body = (b"Subject: split\r\n\r\n.dot first\r\n..\r\nline\r\n.\r\n"
            b"bare\nLF and bare\rCR\r\n" + b"x" * 300 + b"\r\nlast\r\n")
    wire = re.sub(rb"(?m)^\.", b"..", body)       # what a client sends (body has no bare LF before a dot)
    s = daemon.raw(daemon.lmtp_port)
    r = Replies(s)
    assert r.reply()[0] == 220
    send_in_pieces(s, b"LHLO split.example\r\nMAIL FROM:<s@example.org>\r\n"
                      b"RCPT TO:<alice@example.com>\r\nDATA\r\n", rnd,
                   cuts=[17, 18, 19])
    assert [r.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    payload = wire + b".\r\n"
    cr_positions = [i + 1 for i in range(len(payload)) if payload[i:i + 1] == b"\r"]
    send_in_pieces(s, payload, rnd, cuts=cr_positions)
    assert r.reply()[0] == 250
    s.sendall(b"QUIT\r\n")
    assert r.reply()[0] == 221
    s.close()
    assert daemon.messages("alice") == [crlf(body)]


def test_concurrent_deliveries_get_distinct_uids(daemon):
    """Five connections deliver 100 messages each at once: 500 messages,
    UIDs 1..500 without gaps or repeats, each stored exactly as sent."""
    sent = {}
    errors = []

    def stream(n):
        try:
            c = daemon.lmtp()
            for i in range(100):
                m = b"X-Id: %d-%d\r\nSubject: concurrent\r\n\r\n" % (n, i) + b"body %d\r\n" % i * (i % 7)
                _, _, data = lmtp_send(c, "s@example.org", ["bob@example.com"], m)
                assert data["bob@example.com"][0] == 250, data
                sent[b"%d-%d" % (n, i)] = lmtp_stored(m)
            c.quit()
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    p = daemon.pop3("bob", "bob-pw")
    uidls = uidl_map(p)
    assert len(uidls) == 500
    uv = int(uidls[1][8:], 16)
    assert sorted(uidls.values()) == ["%08X%08X" % (u, uv) for u in range(1, 501)]
    seen = set()
    for i in range(1, 501):
        m = retr_bytes(p, i)
        key = re.match(rb"X-Id: (\d+-\d+)\r\n", m).group(1)
        assert m == sent[key] and key not in seen
        seen.add(key)
    p.quit()


def test_over_quota_recipient_gets_552_and_others_are_stored(daemon_factory):
    """A full mailbox refuses only its own recipient (552 5.2.2, RFC 3463
    mailbox full) and stores nothing for it; the other recipient of the same
    transaction gets the message.  `onebox deliver` refuses it for good too
    (77, with quota.lmtp_over_quota at its default "permanent")."""
    d = daemon_factory(users={"alice": "pw-alice", "bob": "pw-bob"})
    assert d.cli("user", "quota", "alice", "--messages", "1").returncode == 0
    c = d.lmtp()
    _, _, after = lmtp_send(c, "s@example.org", ["alice", "bob"], msg("one"))
    assert after["alice"][0] == 250 and after["bob"][0] == 250
    _, _, after = lmtp_send(c, "s@example.org", ["alice", "bob"], msg("two"))
    assert after["alice"][0] == 552 and b"5.2.2" in after["alice"][1], after
    assert after["bob"][0] == 250, after
    c.quit()
    r = d.cli("deliver", "alice", input=msg("three"))
    assert r.returncode == 77 and r.stderr.startswith(b"5.2.2 "), r
    alice = d.messages("alice")
    assert len(alice) == 1 and b"Subject: one" in alice[0]
    assert len(d.messages("bob")) == 2
