#!/usr/bin/env bash
# check_abi.sh - fails when libsegforge.so exports other symbols than the
# checked-in list include/segforge.abi, or when that list and the SF_API
# functions of include/segforge.h differ. So an unintended export (an
# internal function left visible), a removal, or a public function that is
# declared but not exported all fail the tests.
#
#   scripts/check_abi.sh path/to/libsegforge.so [path/to/libsegforge.a]
#
# After an intended change of the API (new functions in a minor version),
# regenerate the list with --update and commit it with the header.
set -euo pipefail
cd "$(dirname "$0")/.."
lib=${1:?usage: check_abi.sh LIBSEGFORGE_SO [--update]}
list=include/segforge.abi
# Defined dynamic symbols with their version, e.g. sf_train@@SEGFORGE_1; the
# version node itself (an absolute symbol) is left out.
exported=$(nm -D --defined-only "$lib" | awk '$2 != "A" {print $3}' | LC_ALL=C sort)
if [[ ${2:-} == --update ]]; then
  {
    echo "# The dynamic symbols libsegforge.so exports (nm -D --defined-only),"
    echo "# one per line; scripts/check_abi.sh compares them in the tests."
    echo "$exported"
  } >"$list"
  echo "check_abi: wrote $list ($(echo "$exported" | wc -l) symbols)"
  exit 0
fi
want=$(grep -v '^#' "$list" | LC_ALL=C sort)
status=0
if ! diff_out=$(diff <(echo "$want") <(echo "$exported")); then
  echo "check_abi: $lib exports other symbols than $list" >&2
  echo "  ('<' listed but not exported, '>' exported but not listed):" >&2
  echo "$diff_out" | grep '^[<>]' | sed 's/^/  /' >&2
  echo "  an unintended export: give it no SF_API; a removal breaks the ABI (a new" >&2
  echo "  major version); an intended addition: scripts/check_abi.sh $lib --update" >&2
  status=1
fi
# Every SF_API function of the header is in the list, and nothing else.
declared=$(python3 - <<'PY' | LC_ALL=C sort
import re
src = open("include/segforge.h").read()
src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)       # comments
src = re.sub(r"^\s*#.*$", " ", src, flags=re.M)         # preprocessor lines
for m in re.finditer(r"\bSF_API\b[^;{(]*?\b([A-Za-z_]\w*)\s*\(", src):
    print(m.group(1))
PY
)
listed=$(echo "$want" | sed 's/@.*//' | LC_ALL=C sort)
if ! diff_out=$(diff <(echo "$declared") <(echo "$listed")); then
  echo "check_abi: the SF_API functions of include/segforge.h and $list differ" >&2
  echo "  ('<' declared but not listed, '>' listed but not declared):" >&2
  echo "$diff_out" | grep '^[<>]' | sed 's/^/  /' >&2
  status=1
fi
# The static library, when given: its global definitions are the same
# names, unversioned (everything else was made local when it was built).
if [[ -n ${2:-} ]]; then
  static=$(nm -g --defined-only "$2" | awk 'NF == 3 {print $3}' | LC_ALL=C sort)
  if ! diff_out=$(diff <(echo "$listed") <(echo "$static")); then
    echo "check_abi: $2 defines other global symbols than $list" >&2
    echo "  ('<' listed but not defined, '>' defined but not listed):" >&2
    echo "$diff_out" | grep '^[<>]' | sed 's/^/  /' >&2
    status=1
  fi
fi
[[ $status == 0 ]] && echo "check_abi: $(echo "$exported" | wc -l) symbols, as listed"
exit $status
