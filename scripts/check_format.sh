#!/usr/bin/env bash
# Fails when a C file of the tree differs from .clang-format (Debian's
# clang-format 14, which scripts/deps.sh installs), naming each file and the
# command that fixes it. Run by scripts/test.sh and as the ctest check_format.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check_format: clang-format is not installed (bash scripts/deps.sh)" >&2; exit 2; }
bad=()
while IFS= read -r f; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then bad+=("$f"); fi
done < <(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*')
if ((${#bad[@]})); then
  printf 'check_format: %s differs from .clang-format\n' "${bad[@]}" >&2
  echo "check_format: fix with: clang-format -i ${bad[*]}" >&2
  exit 1
fi
echo "check_format: $(git ls-files '*.c' '*.h' | wc -l) files match .clang-format"
