"""What every tests/py_api_*.py does first: finds the package (python/ in the
source tree) and the library (SEGFORGE_LIBRARY, else libsegforge.so.1 beside
the `segforge` program under test, i.e. in the build directory).

Under the sanitizer build (build-asan) that library needs the ASan runtime
loaded before anything else, which python3 is not linked with: the test
then runs itself again with the runtime in LD_PRELOAD and leak detection off
(at exit the interpreter leaves its own memory for the OS, which
LeakSanitizer would report; the C tests of the API check the library's
leaks). Everything else the sanitizers catch still aborts the test.
"""
import faulthandler
import os
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("SF_SRC", os.path.join(HERE, ".."))


def _needs_asan(lib):
    try:
        out = subprocess.run(["readelf", "-d", lib], capture_output=True, timeout=30).stdout
    except OSError:
        return False
    return b"libasan" in out


def setup():
    # A test that hangs prints every thread's stack and fails, instead of
    # waiting for ctest's timeout with nothing to show; a process that dies
    # of a signal (a worker of a pool, say) prints its stack first.
    faulthandler.enable()
    faulthandler.dump_traceback_later(480, exit=True)
    if "SEGFORGE_LIBRARY" not in os.environ and "SEGFORGE" in os.environ:
        os.environ["SEGFORGE_LIBRARY"] = os.path.join(
            os.path.dirname(os.path.abspath(os.environ["SEGFORGE"])), "libsegforge.so.1")
    lib = os.environ.get("SEGFORGE_LIBRARY")
    if lib and "libasan" not in os.environ.get("LD_PRELOAD", "") and _needs_asan(lib):
        rt = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                            timeout=30).stdout.decode().strip()
        env = dict(os.environ)
        env["LD_PRELOAD"] = " ".join(x for x in (rt, env.get("LD_PRELOAD")) if x)
        env["ASAN_OPTIONS"] = ":".join(x for x in (env.get("ASAN_OPTIONS"), "detect_leaks=0")
                                       if x)
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    sys.path.insert(0, os.path.join(SRC, "python"))
