#!/usr/bin/env bash
# api_install.sh - the installed library from outside the tree, as a user
# gets it: `cmake --install` into a temporary prefix; the examples built
# with pkg-config alone (shared, and static from libsegforge.a) and by a
# CMake project with find_package(segforge); then run end to end: a job
# trained, staged by two workers and finalized without Kafka, searched;
# and a second job whose workers publish to `segforge serve` (on its
# embedded broker), which commits it while the finalizer example waits.
# Env: SF_BUILD (the build directory), SF_SRC, SF_TEST_TMP, SEGFORGE,
# SF_USER_CFLAGS (the sanitizer flags of a sanitized build, for the programs).
. "$(dirname "$0")/shell_helpers.sh"
scratch api_install
B=${SF_BUILD:?set SF_BUILD to the build directory}
P=$T/prefix
X=$SF_SRC/examples
CF=${SF_USER_CFLAGS:-}

cmake --install "$B" --prefix "$P" >"$T/install.log" 2>&1 || { cat "$T/install.log"; echo "FAIL install"; exit 1; }
libdir=$(dirname "$(find "$P" -name segforge.pc)")/..
libdir=$(realpath "$libdir")
check "the program is installed" test -x "$P/bin/segforge"
check "libsegforge.so.1 with its SONAME" \
  bash -c "readelf -d '$libdir/libsegforge.so.1' | grep -q 'SONAME.*\[libsegforge.so.1\]'"
check "libsegforge.so links to it" test "$(readlink "$libdir/libsegforge.so")" = libsegforge.so.1
check "the static library" test -f "$libdir/libsegforge.a"
check "one header, segforge.h, and no internal one" \
  test "$(cd "$P/include" && find . -type f)" = ./segforge.h
# The header alone, in the strictest dialects a user may build with.
for std in c89 c99 c11; do
  check "segforge.h compiles as -std=$std -pedantic" \
    cc -std=$std -Wall -Wextra -pedantic -Werror -fsyntax-only -x c "$P/include/segforge.h"
done
for std in c++98 c++11 c++17; do
  check "segforge.h compiles as -std=$std -pedantic" \
    g++ -std=$std -Wall -Wextra -pedantic -Werror -fsyntax-only -x c++ "$P/include/segforge.h"
done
check "the CMake package" test -f "$libdir/cmake/segforge/segforgeConfig.cmake" -a \
  -f "$libdir/cmake/segforge/segforgeConfigVersion.cmake"

export PKG_CONFIG_PATH=$libdir/pkgconfig
check "pkg-config knows the version" test "$(pkg-config --modversion segforge)" = \
  "$(sed -n 's/^#define SF_VERSION_MAJOR //p' "$SF_SRC/include/segforge.h").$(sed -n \
    's/^#define SF_VERSION_MINOR //p' "$SF_SRC/include/segforge.h").$(sed -n \
    's/^#define SF_VERSION_PATCH //p' "$SF_SRC/include/segforge.h")"
# Shared: pkg-config alone, with the strict warnings of the tree.
for ex in train worker_publish finalize searcher; do
  check "cc $ex.c \$(pkg-config --cflags --libs segforge)" \
    cc -std=c11 -Wall -Wextra -Werror -pthread $CF "$X/$ex.c" -o "$T/$ex" \
    $(pkg-config --cflags --libs segforge)
done
# Static: libsegforge.a, then what segforge.pc says it needs, Requires.private
# and Libs.private, linked as shared libraries. (`pkg-config --static` would
# also ask for librdkafka's own private libraries as archives: liblz4,
# libsasl2, which Debian ships without.)
static_libs="$(pkg-config --libs $(pkg-config --print-requires-private segforge)) \
  $(sed -n 's/^Libs.private: //p' "$libdir/pkgconfig/segforge.pc")"
check "cc searcher.c libsegforge.a + Requires.private + Libs.private" \
  cc -std=c11 -Wall -Werror -pthread $CF "$X/searcher.c" -o "$T/searcher_static" \
  $(pkg-config --cflags segforge) "$libdir/libsegforge.a" $static_libs
check "the static searcher needs no libsegforge.so" \
  bash -c "! ldd '$T/searcher_static' | grep -q libsegforge"
# CMake: find_package(segforge) and its two targets.
mkdir -p "$T/consumer"
cat >"$T/consumer/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(segforge 1 REQUIRED)
find_package(Threads REQUIRED)
add_executable(train $X/train.c)
target_link_libraries(train segforge::segforge)
add_executable(searcher $X/searcher.c)
target_link_libraries(searcher segforge::segforge_static Threads::Threads)
CMAKE
check "find_package(segforge) builds the examples" bash -c \
  "cmake -S '$T/consumer' -B '$T/consumer/build' -DCMAKE_PREFIX_PATH='$P' \
     -DCMAKE_C_FLAGS='$CF' >'$T/cmake.log' 2>&1 &&
   cmake --build '$T/consumer/build' >>'$T/cmake.log' 2>&1 || { cat '$T/cmake.log'; false; }"

export LD_LIBRARY_PATH=$libdir
DS=$T/ds
mkdir -p "$DS"
# Without Kafka: train, two workers at once, finalize, search.
check "train" "$T/train" "$DS" job-1
"$T/worker_publish" "$DS" job-1 w0 0 1 0-3 >"$T/w0.out" 2>&1 &
"$T/worker_publish" "$DS" job-1 w1 2 3 0-3 >"$T/w1.out" 2>&1
w1=$?
wait $!
check "two workers stage their shards" test $? = 0 -a $w1 = 0
check "finalize plans 2 segments and commits version 1" bash -c \
  "'$T/finalize' '$DS' job-1 0-3 >'$T/fin.out' 2>&1 && grep -q 'plan: 2 segment' '$T/fin.out' &&
   grep -q 'committed job-1 in catalog version 1' '$T/fin.out' || { cat '$T/fin.out'; false; }"
rows="5 999 $((1 << 32)) $(((3 << 32) | 999))"
check "the shared searcher finds every query's own row first" bash -c \
  "'$T/searcher' '$DS' $rows >'$T/s.out' && grep -q '4 of 4 queries' '$T/s.out'"
check "the static searcher agrees" bash -c \
  "env -u LD_LIBRARY_PATH '$T/searcher_static' '$DS' $rows >'$T/s2.out' && diff -q '$T/s.out' '$T/s2.out'"
check "the CMake-built searcher agrees" bash -c \
  "'$T/consumer/build/searcher' '$DS' $rows >'$T/s3.out' && diff -q '$T/s.out' '$T/s3.out'"
check "a job nobody commits times out with TIMEOUT" bash -c \
  "'$T/finalize' --wait '$DS' job-9 200 2>&1 | grep -q \"TIMEOUT: job 'job-9' is not committed\""

# With Kafka: serve on its embedded broker commits what the workers publish.
"$SEGFORGE" serve --dataset-root "$T" --staging-timeout 60s --compact off >"$T/serve.out" 2>"$T/serve.err" &
serve=$!
trap 'kill $serve 2>/dev/null; wait $serve 2>/dev/null; [ -n "${SF_KEEP:-}" ] || rm -rf "$T"' EXIT
for _ in $(seq 100); do
  brokers=$(sed -n 's/^bootstrap.servers=//p' "$T/serve.out")
  [ -n "$brokers" ] && break
  sleep 0.1
done
check "serve prints its broker" test -n "$brokers"
check "train job-2" "$T/train" "$DS" job-2
# Fragments 4-7 this time: the index grows (the quantizer is the same one,
# trained again on the same sample with the same seed).
"$T/worker_publish" "$DS" job-2 w0 4 5 4-7 "$brokers" >"$T/p0.out" 2>&1 &
"$T/worker_publish" "$DS" job-2 w1 6 7 4-7 "$brokers" >"$T/p1.out" 2>&1
p1=$?
wait $!
p0=$?
check "two workers publish their ShardStaged" bash -c \
  "test $p0 = 0 -a $p1 = 0 && grep -q '^published job-2/w0@' '$T/p0.out' &&
   grep -q '^published job-2/w1@' '$T/p1.out' || { cat '$T/p0.out' '$T/p1.out'; false; }"
check "the finalizer waits until serve committed job-2 (version 2)" bash -c \
  "'$T/finalize' --wait '$DS' job-2 30000 | grep -q 'job-2 committed in catalog version 2'"
check "the searcher sees job-2's rows in version 2" bash -c \
  "'$T/searcher' '$DS' $rows $(((5 << 32) | 17)) >'$T/s4.out' &&
   grep -q '8000 rows in 4 segment(s), catalog version 2' '$T/s4.out' &&
   grep -q '5 of 5 queries' '$T/s4.out' || { cat '$T/s4.out'; false; }"
kill -TERM $serve
wait $serve
check "serve drains and exits 0" test $? = 0

echo "api_install: $passes passed, $fails failed"
[ $fails = 0 ]
