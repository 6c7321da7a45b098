#!/bin/sh
# tools/deps.sh - install the Debian 12 packages onebox needs, if any is missing.
#   tools/deps.sh build   what building and running needs
#   tools/deps.sh test    that plus what the test suite needs
#   tools/deps.sh bench   build packages plus Dovecot (the benchmark's peer)
# Runs apt-get only when something is missing (as root, or through sudo).
set -eu

build_pkgs="meson ninja-build pkg-config gcc libc6-dev libgnutls28-dev libuv1-dev
liblmdb-dev libconfig-dev libcrypt-dev zlib1g-dev openssl"
# clang and its runtimes (libclang-rt-14-dev holds libFuzzer and the
# sanitizers) build the fuzz targets test.sh runs (tests/fuzz/run.sh).
# lmdb-utils (mdb_load) makes the LMDB file of another program that a
# fault test expects onebox to refuse.
test_pkgs="python3 python3-pytest clang libclang-rt-14-dev lmdb-utils"
# Postfix is optional (its tests skip without it): it gives the suite an
# independent LMTP client (smtp-source) and a real lmtp: transport.
optional_pkgs="postfix"
# The benchmark (tests/bench/) runs a private Dovecot beside onebox.  The
# packages must not start a system Dovecot on 143/110: see no_autostart.
bench_pkgs="dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd"

case "${1:-build}" in
build) want="$build_pkgs" ;;
test) want="$build_pkgs $test_pkgs"; optional="$optional_pkgs" ;;
bench) want="$build_pkgs python3 $bench_pkgs"; optional="$optional_pkgs" ;;
*) echo "usage: $0 build|test|bench" >&2; exit 64 ;;
esac

optional="${optional:-}"
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
missing=""
for p in $want; do
	installed "$p" || missing="$missing $p"
done
opt_missing=""
for p in $optional; do
	installed "$p" || opt_missing="$opt_missing $p"
done
[ -z "$missing$opt_missing" ] && exit 0

echo "installing:$missing$opt_missing"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# Postfix is only wanted for its smtp-source LMTP client: do not let the
# package configure or start a mail system.
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections

# Packages with a daemon (Dovecot) start it from their postinst through
# invoke-rc.d, which asks /usr/sbin/policy-rc.d first: exit 101 means
# "denied".  Put one in place for the install when the machine has none
# (containers often do already), and take ours away afterwards.
policy=/usr/sbin/policy-rc.d
our_policy=""
cleanup_policy() {
	if [ -n "$our_policy" ]; then
		$sudo rm -f "$policy"
	fi
}
trap cleanup_policy EXIT
trap 'cleanup_policy; exit 130' INT TERM
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\n# tools/deps.sh: no service starts during this install\nexit 101\n' |
		$sudo tee "$policy" >/dev/null
	$sudo chmod 755 "$policy"
	our_policy=1
fi

$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
if [ -n "$missing" ]; then
	# shellcheck disable=SC2086
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
# Never let an optional package replace something the machine has (another
# mail server, say): --no-remove makes apt refuse instead.
for p in $opt_missing; do
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		--no-remove "$p" || echo "optional package $p not installed; its tests will skip"
done

# On a machine booted with systemd, the Dovecot package also enables its
# unit for the next boot: the benchmark wants no system Dovecot at all.
case " $missing " in
*" dovecot-core "*)
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		$sudo systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
	fi ;;
esac
