#!/usr/bin/env bash
# test.sh - install what the tests need, build onebox with AddressSanitizer
# and UBSan in build-test/, run the C unit tests (meson test), the
# protocol tests (pytest with Debian's python3), each fuzz target for a
# short bounded time (tests/fuzz/run.sh, clang) and the benchmark in its
# smoke mode (tests/bench/run --smoke, with Dovecot), and end with one line:
#   N passed, M failed
# Exit status 0 only when nothing failed and something passed.
# Works on a fresh Debian 12 machine as root (or with sudo): the packages
# are installed by tools/deps.sh when one is missing.
set -uo pipefail

cd "$(dirname "$0")" || exit 1
ROOT=$(pwd)
BUILD=build-test

say() { printf '== %s\n' "$*"; }

finish() {  # finish PASSED FAILED
	echo "$1 passed, $2 failed"
	if [ "$2" -eq 0 ] && [ "$1" -gt 0 ]; then exit 0; fi
	exit 1
}

# --- 1. Debian packages, installed only when one is missing -------------
# tools/deps.sh is the one place that knows the package list; "test" adds
# python3-pytest and postfix (for smtp-source, Postfix's LMTP client).
say "tools/deps.sh test"
if ! sh tools/deps.sh test </dev/null; then
	echo "installing the Debian packages failed"
	finish 0 1
fi

# --- 2. Build with sanitizers -------------------------------------------
SETUP_OPTS=("-Db_sanitize=address,undefined")
if echo 'int main(void){return 0;}' | gcc -x c -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined -o /dev/null - 2>/dev/null; then
	SETUP_OPTS+=(-Dc_args=-fno-sanitize-recover=undefined)
fi
say "meson setup $BUILD ${SETUP_OPTS[*]}"
if [ -f "$BUILD/build.ninja" ]; then
	meson setup --reconfigure "$BUILD" "${SETUP_OPTS[@]}" >"$BUILD.setup.log" 2>&1 \
		|| meson setup --wipe "$BUILD" "${SETUP_OPTS[@]}" >"$BUILD.setup.log" 2>&1
else
	rm -rf "$BUILD"
	meson setup "$BUILD" "${SETUP_OPTS[@]}" >"$BUILD.setup.log" 2>&1
fi
status=$?
if [ $status -ne 0 ]; then
	cat "$BUILD.setup.log"; rm -f "$BUILD.setup.log"
	echo "meson setup failed"
	finish 0 1
fi
rm -f "$BUILD.setup.log"
say "meson compile -C $BUILD"
if ! meson compile -C "$BUILD"; then
	echo "build failed"
	finish 0 1
fi

# --- 3. Tests ------------------------------------------------------------
export ONEBOX_BIN="$ROOT/$BUILD/onebox"
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:print_stacktrace=1:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="print_suppressions=0"

PASSED=0
FAILED=0

say "meson test -C $BUILD (C unit tests)"
meson test -C "$BUILD" --print-errorlogs 2>&1 | tee "$BUILD/unit.log"
unit_status=${PIPESTATUS[0]}
count() {  # count LABEL: the number after "LABEL:" in meson's summary
	sed -n "s/^$1:[[:space:]]*\([0-9][0-9]*\).*/\1/p" "$BUILD/unit.log" | tail -1
}
u_ok=$(count "Ok"); u_fail=$(count "Fail"); u_xpass=$(count "Unexpected Pass"); u_timeout=$(count "Timeout")
u_ok=${u_ok:-0}; u_fail=${u_fail:-0}; u_xpass=${u_xpass:-0}; u_timeout=${u_timeout:-0}
u_failed=$((u_fail + u_xpass + u_timeout))
if [ "$unit_status" -ne 0 ] && [ "$u_failed" -eq 0 ]; then
	u_failed=1   # meson test failed without a summary (e.g. a build error)
fi
PASSED=$((PASSED + u_ok))
FAILED=$((FAILED + u_failed))
say "C unit tests: $u_ok passed, $u_failed failed"

say "pytest tests/protocol (protocol tests, /usr/bin/python3)"
JUNIT="$ROOT/$BUILD/pytest-junit.xml"
rm -f "$JUNIT"
/usr/bin/python3 -m pytest tests/protocol -q -rfEs --junitxml="$JUNIT" </dev/null
py_status=$?
read -r p_pass p_fail < <(/usr/bin/python3 - "$JUNIT" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 0)
    sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = f = e = s = 0
for su in suites:
    t += int(su.get("tests", 0)); f += int(su.get("failures", 0))
    e += int(su.get("errors", 0)); s += int(su.get("skipped", 0))
print(t - f - e - s, f + e)
EOF
)
p_pass=${p_pass:-0}; p_fail=${p_fail:-0}
# pytest exit 0: all passed; 1: some failed; 5: none collected.  Anything
# else (interrupted, internal or usage error) counts as a failure too.
if [ "$py_status" -ne 0 ] && [ "$py_status" -ne 5 ] && [ "$p_fail" -eq 0 ]; then
	p_fail=1
fi
PASSED=$((PASSED + p_pass))
FAILED=$((FAILED + p_fail))
say "protocol tests: $p_pass passed, $p_fail failed"

# --- 4. Fuzzing, bounded ------------------------------------------------
# Each libFuzzer target (tests/fuzz/) runs FUZZ_SECONDS (default 15) under
# ASan and UBSan from its seed corpus; one pass or failure per target.
FUZZ_SECONDS=${FUZZ_SECONDS:-15}
say "tests/fuzz/run.sh $FUZZ_SECONDS (libFuzzer targets, clang)"
# Shown as it runs and kept for the count.  (Not `tee /dev/stderr`: with
# stderr redirected to a file, opening /dev/stderr again truncates it.)
tests/fuzz/run.sh "$FUZZ_SECONDS" </dev/null 2>&1 | tee "$BUILD/fuzz.log" >&2
fuzz_status=${PIPESTATUS[0]}
fuzz_out=$(cat "$BUILD/fuzz.log")
f_pass=$(printf '%s\n' "$fuzz_out" | grep -c '^fuzz [a-z0-9]*: ok')
f_fail=$(printf '%s\n' "$fuzz_out" | grep -c '^fuzz [a-z0-9]*: FAILED')
if [ "$fuzz_status" -ne 0 ] && [ "$f_fail" -eq 0 ]; then
	f_fail=1
fi
PASSED=$((PASSED + f_pass))
FAILED=$((FAILED + f_fail))
say "fuzz targets: $f_pass passed, $f_fail failed"

# --- 5. Benchmark smoke test (tests/bench/run --smoke) -------------------
# onebox and a private Dovecot side by side, a few seconds per scenario
# (docs/benchmarks.md); fails only when a scenario errors on onebox, never
# on a timing.  BENCH_SMOKE=0 skips it.
if [ "${BENCH_SMOKE:-1}" != 0 ]; then
	say "tests/bench/run --smoke (benchmark smoke test)"
	if tests/bench/run --smoke </dev/null >"$BUILD/bench-smoke.log" 2>&1; then
		PASSED=$((PASSED + 1)); say "benchmark smoke: ok"
	else
		tail -60 "$BUILD/bench-smoke.log"; FAILED=$((FAILED + 1)); say "benchmark smoke: FAILED"
	fi
fi

finish "$PASSED" "$FAILED"
