#!/usr/bin/env bash
# tests/fuzz/run.sh - build the libFuzzer targets with clang, AddressSanitizer
# and UBSan in build-fuzz/, and fuzz each for a bounded time.
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
# SECONDS per target (default 20); targets imap pop3 lmtp mime config by
# default.  Each target starts from its seed corpus (tests/fuzz/corpus/<t>)
# plus what earlier runs found (build-fuzz/fuzz-corpus/<t>).  Prints one
# line per target, "fuzz <t>: ok (...)" or "fuzz <t>: FAILED (...)", and
# exits non-zero if any failed.  A crash leaves its input in
# build-fuzz/fuzz-artifacts/<t>/: fix the bug, then copy the input to
# tests/fuzz/regressions/<t>/ so `meson test` replays it for ever.
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 1
SECS=${1:-20}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(imap pop3 lmtp mime config)
BUILD=${FUZZ_BUILD:-build-fuzz}
CLANG=${CLANG:-clang}

fail_all() {
	for t in "${TARGETS[@]}"; do echo "fuzz $t: FAILED ($1)"; done
	exit 1
}

if ! command -v "$CLANG" >/dev/null; then
	fail_all "no $CLANG; tools/deps.sh test installs it"
fi
if [ ! -f "$BUILD/build.ninja" ]; then
	rm -rf "$BUILD"
	if ! CC="$CLANG" meson setup "$BUILD" -Dfuzz=true -Db_sanitize=address,undefined \
		-Db_lundef=false >"$BUILD.setup.log" 2>&1; then
		cat "$BUILD.setup.log"
		rm -f "$BUILD.setup.log"
		fail_all "meson setup failed"
	fi
	rm -f "$BUILD.setup.log"
fi
names=()
for t in "${TARGETS[@]}"; do names+=("fuzz_$t"); done
if ! meson compile -C "$BUILD" "${names[@]}"; then
	fail_all "build failed"
fi

# Longest input per target: a few commands with literals, or one message.
max_len() {
	case $1 in
	imap | lmtp) echo 16384 ;;
	mime) echo 65536 ;;
	*) echo 4096 ;;
	esac
}

export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:print_stacktrace=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$(pwd)/tests/fuzz/lsan.supp:print_suppressions=0"
failed=0
for t in "${TARGETS[@]}"; do
	work="$BUILD/fuzz-corpus/$t"
	art="$BUILD/fuzz-artifacts/$t"
	log="$BUILD/fuzz-$t.log"
	mkdir -p "$work" "$art"
	dict=()
	[ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
	"$BUILD/tests/fuzz/fuzz_$t" -max_total_time="$SECS" -max_len="$(max_len "$t")" \
		-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
		-artifact_prefix="$art/" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1
	status=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
	if [ $status -eq 0 ]; then
		echo "fuzz $t: ok (${SECS}s, ${execs:-?} runs, ${cov:-cov: ?})"
	else
		failed=$((failed + 1))
		grep -E 'ERROR|SUMMARY|contract|runtime error|#[0-9] ' "$log" | head -20
		echo "fuzz $t: FAILED (exit $status; log $log; inputs in $art/)"
	fi
done
exit $((failed > 0))
