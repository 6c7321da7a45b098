#!/bin/sh
# demo.sh - install what is missing, build onebox, and run it on config/demo.conf:
# a local data folder (demo-data/), a self-signed certificate, a user "demo"
# with password "demo", and unprivileged ports on 127.0.0.1.  Ctrl-C stops it.
set -eu
cd "$(dirname "$0")"

tools/deps.sh build
[ -d build ] || meson setup build
meson compile -C build

mkdir -p demo-data
if [ ! -f demo-data/cert.pem ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
		-days 365 -keyout demo-data/key.pem -out demo-data/cert.pem 2>/dev/null
	chmod 600 demo-data/key.pem
fi

conf=config/demo.conf
if ! build/onebox user list -c "$conf" | grep -qx demo; then
	echo demo | build/onebox user add demo -c "$conf"
	printf 'From: onebox <postmaster@localhost>\r\nTo: demo@localhost\r\nSubject: Welcome to onebox\r\n\r\nThis message was stored by `onebox deliver`.\r\nRead it over POP3, then deliver more over LMTP.\r\n' |
		build/onebox deliver demo -c "$conf"
fi

cat <<'TXT'

onebox demo is starting.  User "demo", password "demo".

  IMAP with TLS   127.0.0.1:1993   openssl s_client -quiet -connect 127.0.0.1:1993
  IMAP + STARTTLS 127.0.0.1:1143   openssl s_client -quiet -starttls imap -connect 127.0.0.1:1143
  POP3 with TLS   127.0.0.1:1995   openssl s_client -quiet -connect 127.0.0.1:1995
  POP3 + STLS     127.0.0.1:1110   openssl s_client -quiet -starttls pop3 -connect 127.0.0.1:1110
  LMTP            127.0.0.1:2424   python3 -c 'import smtplib; smtplib.LMTP("127.0.0.1", 2424).sendmail("a@b", ["demo"], "Subject: hi\r\n\r\nhello\r\n")'
  local delivery  build/onebox deliver demo -c config/demo.conf < message.eml

  A mail client: server 127.0.0.1, IMAP port 1993 or POP3 port 1995,
  SSL/TLS, normal password; accept the self-signed certificate
  (demo-data/cert.pem) when asked.  Point an IMAP and a POP3 client at the
  same mailbox: each sees what the other did (docs/mixed-protocol.md).

TXT
exec build/onebox serve -c "$conf"
