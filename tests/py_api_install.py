#!/usr/bin/python3
"""The Python package as `cmake --install` leaves it: installed into a
temporary prefix under lib/python3/dist-packages with the path of the
installed libsegforge.so.1 recorded in segforge/_libpath.py, it is imported
by a fresh python3 from outside the tree (no SEGFORGE_LIBRARY, PYTHONPATH
only), loads that library and runs the README's Python quick start verbatim. A
DESTDIR install records the prefix's path, not the staging directory's.
"""
import os
import shutil
import subprocess
import sys
import textwrap

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import api_python  # noqa: E402

api_python.setup()  # under the sanitizer build, the child python3 needs it too
import serve_helpers as h  # noqa: E402

check = h.check
build = os.path.dirname(os.path.abspath(h.SEGFORGE))
root = os.path.join(h.TMP, "py_api_install")
shutil.rmtree(root, ignore_errors=True)
os.makedirs(root)
prefix = os.path.join(root, "prefix")
h.run(["cmake", "--install", build, "--prefix", prefix], timeout=300)
pkg = os.path.join(prefix, "lib", "python3", "dist-packages", "segforge")
check(os.path.isfile(os.path.join(pkg, "__init__.py")), "the package is under "
      "lib/python3/dist-packages")
libs = [os.path.join(d, f) for d, _, fs in os.walk(prefix) for f in fs
        if f == "libsegforge.so.1"]
check(len(libs) == 1, "one libsegforge.so.1 is installed: %s" % libs)
check(not os.path.exists(os.path.join(pkg, "__pycache__")), "no bytecode from the tree")

# The README's Python quick start, run verbatim between a preamble that
# makes its data (one worker holding fragments 0-3) and a check of its answer.
readme = open(os.path.join(h.SRC, "README.md")).read()
block = readme.split("\n## Python\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
check("segforge.finalize(" in block and ".search(queries" in block,
      "the README has a Python quick start")
quick = textwrap.dedent("""
    import os, sys
    import numpy as np
    root = sys.argv[1]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, 8)).astype(np.float32)
    vectors = x[::-1].copy()  # the worker adds rows in another order than trained
    i = np.arange(2000, dtype=np.uint64)[::-1]
    row_ids = ((i // 500) << np.uint64(32)) | (i % 500)  # fragments 0-3, 500 rows each
    queries = x[:20]
    dataset = os.path.join(root, "ds")
""") + "import segforge\nstaging = segforge.staging_root(dataset, 'job-1')\n" + block + \
    textwrap.dedent("""
    print(segforge.library_path)
    print(segforge.__file__)
    want = [(j // 500) << 32 | j % 500 for j in range(20)]
    print(int((ids[:, 0] == np.array(want, dtype=np.uint64)).sum()), float(dists[:, 0].max()))
""")
env = {k: v for k, v in os.environ.items() if k not in ("SEGFORGE_LIBRARY", "PYTHONPATH")}
env["PYTHONPATH"] = os.path.dirname(pkg)
env["PYTHONDONTWRITEBYTECODE"] = "1"
p = subprocess.run(["/usr/bin/python3", "-c", quick, root], capture_output=True, env=env,
                   cwd=root, timeout=300)
out = p.stdout.decode().split("\n")
check(p.returncode == 0, "the README's quick start runs against the installed package (%s)" %
      p.stderr.decode()[-500:])
if p.returncode == 0:
    check(out[0] == libs[0], "it loads the installed library: %s" % out[0])
    check(out[1].startswith(pkg), "it imports the installed package: %s" % out[1])
    check(out[2] == "20 0.0", "each query finds itself first at distance 0 (%s)" % out[2])

# DESTDIR: the recorded path is the prefix's, as a packaged install needs.
stage = os.path.join(root, "destdir")
h.run(["cmake", "--install", build, "--prefix", "/opt/sf"], env=dict(os.environ, DESTDIR=stage),
      timeout=300)
rec = open(os.path.join(stage, "opt", "sf", "lib", "python3", "dist-packages", "segforge",
                        "_libpath.py")).read()
check('"/opt/sf/' in rec and stage not in rec and rec.rstrip().endswith('libsegforge.so.1"'),
      "a DESTDIR install records /opt/sf's library: %s" % rec.splitlines()[-1])
h.finish()
