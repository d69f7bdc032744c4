# shell_helpers.sh - what every tests/cli_*.sh starts with, sourced first:
#   . "$(dirname "$0")/shell_helpers.sh"
# It sets S (the program, from SEGFORGE), counts results in fails and passes
# through ok/bad/check, and `scratch NAME` makes the test's scratch
# directory. (Not named cli_*.sh: CMake runs each of those as a test.)
set -u
S=${SEGFORGE:?set SEGFORGE to the segforge binary}
fails=0 passes=0
ok() { echo "ok   $*"; passes=$((passes + 1)); }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { # check "what" command...
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}

# scratch NAME: a fresh directory $T under SF_TEST_TMP (default /tmp), with
# links resolved so that paths a test compares are the ones the program
# prints; removed on exit unless SF_KEEP is set. A test that must clean up
# more sets its own EXIT trap after this.
scratch() {
  mkdir -p "${SF_TEST_TMP:-/tmp}"
  T=$(mktemp -d "${SF_TEST_TMP:-/tmp}/$1.XXXXXX") && test -d "$T" || { echo "FAIL mktemp"; exit 1; }
  T=$(realpath "$T")
  trap '[ -n "${SF_KEEP:-}" ] || rm -rf "$T"' EXIT
}
