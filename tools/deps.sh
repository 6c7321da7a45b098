#!/bin/sh
# tools/deps.sh - install the Debian 12 packages onebox needs, if any is missing.
#   tools/deps.sh build   what building and running needs
#   tools/deps.sh test    that plus what the test suite needs
# Runs apt-get only when something is missing (as root, or through sudo).
set -eu

build_pkgs="meson ninja-build pkg-config gcc libc6-dev libgnutls28-dev libuv1-dev
liblmdb-dev libconfig-dev libcrypt-dev zlib1g-dev openssl"
test_pkgs="python3 python3-pytest postfix"

case "${1:-build}" in
build) want="$build_pkgs" ;;
test) want="$build_pkgs $test_pkgs" ;;
*) echo "usage: $0 build|test" >&2; exit 64 ;;
esac

missing=""
for p in $want; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "installing:$missing"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# Postfix is only wanted for its smtp-source LMTP client: do not let the
# package configure or start a mail system.
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
