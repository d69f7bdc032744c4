#!/usr/bin/env bash
# cli_flags.sh - a flag means the same to every command that takes it: for
# each flag of the table (cli/flags.c) and each command taking it, a value
# just inside its range is accepted (the command then reaches --help and
# exits 0) and a value just outside is refused with exit 2 and the same
# message everywhere, "--<flag>: '<value>' is not <what is accepted>". Each
# such command's --help names the flag.
# docs/cli.md lists each flag with the same form and the same commands.
# Env: SEGFORGE (the program).
. "$(dirname "$0")/shell_helpers.sh"
DOC=$(dirname "$0")/../docs/cli.md

# The commands, as argv prefixes ('inspect' takes --index and --version in
# its catalog form).
declare -A CMD=(
  [plan]="plan" [build]="build" [finalize]="finalize" [serve]="serve"
  [stage]="stage" [commit]="commit" [search]="search" [train]="train"
  [gen]="gen" [demo]="demo" [broker]="broker" [gc]="gc" [compact]="compact"
  [inspect]="inspect --dataset D" [wait]="wait"
)

# run CMD FLAG VALUE: prints "<status>|<message without the command's name>".
run() {
  local cmd=$1 flag=$2 val=$3 err
  # shellcheck disable=SC2086 # the prefix is words
  err=$(timeout 20 "$S" ${CMD[$cmd]} "--$flag" "$val" --help 2>&1 >/dev/null)
  local rc=$?
  err=${err#"segforge $cmd: "}
  err=${err%" (see 'segforge $cmd --help')"}
  printf '%s|%s' "$rc" "$err"
}

# doc_line NAME COMMANDS FORM: docs/cli.md's row of the flag says FORM and
# names the commands.
doc_line() {
  local row c
  row=$(grep -F -- "| \`--$1 " "$DOC")
  case "$row" in
    *"| $3 |") ok "docs/cli.md: --$1 is $3" ;;
    *) bad "docs/cli.md: --$1 is $3 (the row: ${row:-none})" ;;
  esac
  for c in $2; do
    case "$row" in *" $c"[,\ ]*) ;; *) bad "docs/cli.md: --$1 is taken by $c" ;; esac
  done
}

# flag "NAME" "COMMANDS" "INSIDE VALUES" "OUTSIDE VALUES"
flag() {
  local name=$1 cmds=$2 inside=$3 outside=$4 c v first
  for c in $cmds; do
    # shellcheck disable=SC2086
    if "$S" ${CMD[$c]%% *} --help 2>/dev/null | grep -q -- "--$name"; then :; else
      bad "$c --help names --$name"; fi
  done
  for v in $inside; do
    for c in $cmds; do
      local r
      r=$(run "$c" "$name" "$v")
      if [ "${r%%|*}" = 0 ]; then ok "$c --$name $v: accepted"; else
        bad "$c --$name $v: accepted (got ${r})"; fi
    done
  done
  for v in $outside; do
    [ "$v" = "''" ] && v=""
    first=""
    for c in $cmds; do
      local r
      r=$(run "$c" "$name" "$v")
      if [ "${r%%|*}" != 2 ]; then
        bad "$c --$name '$v': refused with exit 2 (got ${r})"
        continue
      fi
      case "${r#*|}" in
        "--$name: '$v' is not "*) ;;
        *) bad "$c --$name '$v': the message names the flag and the value: ${r#*|}"; continue ;;
      esac
      if [ -z "$first" ]; then
        first=${r#*|}
        ok "$c --$name '$v': refused: $first"
        doc_line "$name" "$cmds" "${first#*\' is not }"
      elif [ "${r#*|}" = "$first" ]; then ok "$c --$name '$v': the same refusal"
      else bad "$c --$name '$v': the same refusal as the others: ${r#*|} vs $first"; fi
    done
  done
}

I64=9223372036854775807
flag target-segment-bytes "plan build finalize serve stage" "1 $I64 8G 256M 8589934591G" \
  "0 9223372036854775808 8589934592G 1X"
flag max-merges "build finalize serve compact" "1 256" "0 257"
flag expected-fragments "plan build finalize stage" "0-63,70 5" "5-2 '' x"
flag index-type "plan build finalize train demo" "IVF_FLAT ivf_pq" "IVF_HNSW"
flag metric "gen train demo" "L2 cosine DOT" "HAMMING"
flag staging-id "plan build finalize commit stage wait" "job-1" "../x . a/b"
flag index "finalize commit search inspect compact train wait" "emb_idx" "a/b .."
flag index-name "stage" "emb_idx" "a/b"
flag shard-id "stage" "w-0.a" ".w w/0"
flag fragments "stage" "0-3" "3-0"
flag rows "gen demo" "1 2G 2147483648" "0 2147483649"
flag dim "gen demo" "1 65536" "0 65537"
flag k "gen search" "1 4096" "0 4097"
flag nprobe "search demo" "1 1048576" "0 1048577"
flag nlist "train demo" "1 1048576" "0 1048577"
flag seed "gen train" "0 18446744073709551615" "18446744073709551616 -1"
flag rows-per-fragment "search stage" "1 4294967295" "0 4294967296"
flag partitions "broker serve" "1 1024" "0 1025"
flag workers "serve" "1 256" "0 257"
flag staging-timeout "serve" "1ms 8760h 90s 1.5" "0 0.5ms 8761h soon -1s"
flag drain-timeout "serve" "1ms 8760h" "0 8761h"
flag retry-max-backoff "serve" "1ms 8760h" "0 forever"
flag max-pending-events "serve" "1 1099511627776" "0 1099511627777"
flag max-pending-bytes "serve" "1 1048576G" "0 1048577G"
flag log-level "serve" "error DEBUG" "loud"
flag compact "serve" "on OFF" "maybe"
flag memory "stage" "1M 1024G" "1048575 1025G"
flag timeout "stage wait" "1 2147483647 500ms 30s 5m 1h 1.5s 596h" \
  "0 2147483648 -5 -1s 1e3 0x10 5x 1..2s 597h 99999999999999999999"
flag since "wait" "1s 8760h" "0 8761h"
flag log-format "serve" "logfmt JSON" "xml"
flag keep-versions "gc" "1 4294967295" "0 4294967296"
flag grace "gc" "0 3600 1h 9223372036854775s" "-1 9223372036854776s 1d"
flag version "inspect" "1 $I64" "0 9223372036854775808"
flag nodes "broker" "1 16" "0 17"
flag shards "demo" "1 64" "0 65"
flag queries "gen" "1 16M" "0 16777217"
flag clusters "gen" "1 1048576" "0 1048577"
flag pq-m "train" "1 1024" "0 1025"
flag max-train-rows "train" "1 1024G" "0 1099511627777"
flag iters "train" "1 1000" "0 1001"
flag threads "train" "1 256" "0 257"
flag floor-segment-bytes "compact serve" "1 1048576G" "0 1048577G"
flag max-segment-bytes "compact serve" "1 1048576G" "0 1048577G"
flag segments-per-tier "compact serve" "2 1024" "1 1025"
flag max-merge-at-once "compact serve" "2 1024" "1 1025"

[ $fails -eq 0 ] && echo "all passed" || echo "$fails failed"
[ $fails -eq 0 ]
