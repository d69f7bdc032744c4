#!/usr/bin/env bash
# cli_packaging.sh - the systemd unit in packaging/: `systemd-analyze verify`
# accepts it without a warning (its ExecStart pointed at the program under
# test, since verify checks that the command exists), a unit broken on
# purpose is caught by the same check, the hardening directives are there,
# and `systemd-analyze security --offline` rates its exposure at most 2.0
# ("OK"). The container recipe (packaging/Containerfile) is not built here:
# no container engine runs in the tests; only its references are checked.
# Env: SEGFORGE (the program).
. "$(dirname "$0")/shell_helpers.sh"
SRC=$(cd "$(dirname "$0")/.." && pwd)
UNIT=$SRC/packaging/segforge.service
scratch cli_packaging

if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP systemd-analyze is not installed (Debian package systemd, scripts/deps.sh)"
  exit 0
fi
# verify: rc 0 and nothing said (it only warns about a bad value).
verify() {
  local out
  out=$(systemd-analyze verify "$1" 2>&1)
  [ $? -eq 0 ] && [ -z "$out" ] || { echo "$out" | sed 's/^/     /'; return 1; }
}
# ExecStart is where `cmake --install build` puts the program by default
# (CMAKE_INSTALL_PREFIX /usr/local, the README's command), and the unit
# names no file that the install does not make.
check "ExecStart runs the program where cmake --install puts it" \
  grep -qx 'ExecStart=/usr/local/bin/segforge serve' "$UNIT"
check "the README installs under /usr/local" grep -q 'cmake --install build --prefix /usr/local' \
  "$SRC/README.md"
if grep -q '^Documentation=file:' "$UNIT"; then bad "Documentation= names no file the install makes"; else
  ok "Documentation= names no file the install makes"; fi
# The environment file's example: systemd expands no %-specifier there.
if grep -E '^#   SEGFORGE_[A-Z_]+=.*%' "$UNIT" >/dev/null; then
  bad "the environment file's example holds no %-specifier"
else ok "the environment file's example holds no %-specifier"; fi
sed "s|^ExecStart=/usr/local/bin/segforge|ExecStart=$(realpath "$S")|" "$UNIT" >"$T/segforge.service"
check "systemd-analyze verify accepts packaging/segforge.service" verify "$T/segforge.service"
sed 's/^ProtectSystem=strict/ProtectSystem=bogus/' "$T/segforge.service" >"$T/bad.service"
if verify "$T/bad.service" >/dev/null; then bad "a bad value is caught by the check"; else
  ok "a bad value is caught by the check"; fi
for d in ProtectSystem=strict NoNewPrivileges=yes ProtectHome=yes PrivateTmp=yes \
  PrivateDevices=yes 'CapabilityBoundingSet=' ProtectKernelTunables=yes \
  ProtectKernelModules=yes ProtectControlGroups=yes RestrictNamespaces=yes \
  RestrictSUIDSGID=yes MemoryDenyWriteExecute=yes SystemCallFilter=@system-service \
  'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' KillSignal=SIGTERM TimeoutStopSec=30; do
  check "the unit sets $d" grep -qx -- "$d" "$UNIT"
done
exposure=$(systemd-analyze security --offline=true "$T/segforge.service" 2>/dev/null |
  sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [ -n "$exposure" ] && awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }'; then
  ok "systemd-analyze security: exposure $exposure (at most 2.0)"
else
  bad "systemd-analyze security: exposure ${exposure:-unknown} (at most 2.0)"
fi
# The container recipe: Debian based, the program and the unit's defaults.
C=$SRC/packaging/Containerfile
check "Containerfile is Debian based" grep -q '^FROM debian:bookworm' "$C"
check "Containerfile installs with scripts/deps.sh" grep -q 'scripts/deps.sh' "$C"
check "Containerfile runs serve as a non-root user" grep -q '^USER ' "$C"
check "Containerfile stops with SIGTERM" grep -q '^STOPSIGNAL SIGTERM' "$C"
# COPY . . brings a checkout's build/ along; building there reuses its
# CMakeCache.txt, made for another source path, and cmake stops.
if grep -Eq -- '-B (\./)?build( |$)' "$C"; then bad "Containerfile builds outside the copied tree"; else
  ok "Containerfile builds outside the copied tree"; fi
check "Containerfile copies the program from where it builds it" \
  grep -q '^COPY --from=build /build/segforge ' "$C"
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
