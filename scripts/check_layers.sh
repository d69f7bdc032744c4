#!/usr/bin/env bash
# check_layers.sh - fails when an #include "..." runs against the layers
# (docs/architecture.md). Run from anywhere; exits 1 naming file, line and
# rule for each violation, 0 when the graph is one-way.
#
# The layers, lowest first, and the ranks inside core/:
#   core/ (base < vector < format < catalog < pipeline = search)
#   < schemas/ < kafka/ < consumer/ = producer/ < processor/ < include/ < api/
#   < cli/ = examples/
# Rules:
#   up       a file includes a file of a layer (or core rank) above its own;
#   sibling  a file includes a file of another layer of the same rank
#            (consumer <-> producer, pipeline <-> search, cli <-> examples);
#   mutual   two modules include each other (a module is one header and its
#            .c files: catalog.h, catalog_*.c and catalog_internal.h are one);
#   unknown  an include that names no file of the tree;
#   public   a file of examples/ includes a file of the tree (examples use
#            the installed header alone, <segforge.h>), or include/ does.
# tests/ and bench/ sit outside the layers and may include anything.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'EOF'
import os
import re
import sys

# (layer, rank): a layer may include its own files and those of lower rank.
LAYERS = {
    "core/base": 0, "core/vector": 1, "core/format": 2, "core/catalog": 3,
    "core/pipeline": 4, "core/search": 4,
    "schemas": 10, "kafka": 11, "consumer": 12, "producer": 12,
    "processor": 13, "include": 14, "api": 15, "cli": 16, "examples": 16,
}
# Layers that may include no file of the tree: the public header stands
# alone, and the examples are built against the installed library.
PUBLIC = {"include", "examples"}
TOPS = ["core", "schemas", "kafka", "consumer", "producer", "processor", "include", "api",
        "cli", "examples"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of(path):
    parts = path.split("/")
    if parts[0] == "core":
        return "/".join(parts[:2]) if len(parts) > 2 else None
    return parts[0] if parts[0] in LAYERS else None


def sources():
    for top in TOPS:
        for dirpath, _, names in os.walk(top):
            for n in sorted(names):
                if n.endswith((".c", ".h")):
                    yield os.path.join(dirpath, n)


files = sorted(sources())
known = set(files)


def module_of(path):
    """The module a file belongs to: <dir>/<stem of its header>."""
    d, name = os.path.split(path)
    stem = name.rsplit(".", 1)[0]
    if stem.endswith("_internal"):
        return os.path.join(d, stem[: -len("_internal")])
    if os.path.exists(os.path.join(d, stem + ".h")):
        return os.path.join(d, stem)
    # A .c file without a header of its own: the longest header stem it
    # starts with (catalog_codec.c -> catalog), else the internal header it
    # includes (segread.c -> segfile), else itself.
    best = None
    for other in known:
        od, on = os.path.split(other)
        if od == d and on.endswith(".h") and not on.endswith("_internal.h"):
            ostem = on[:-2]
            if stem.startswith(ostem + "_") and (best is None or len(ostem) > len(best)):
                best = ostem
    if best:
        return os.path.join(d, best)
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = INCLUDE.match(line)
            if m and m.group(1).endswith("_internal.h"):
                t = m.group(1)
                return t[: -len("_internal.h")]
    return os.path.join(d, stem)


errors = []
edges = {}  # (module, module) -> first (file, line, target)
for path in files:
    src_layer = layer_of(path)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            inc = m.group(1)
            local = os.path.normpath(os.path.join(os.path.dirname(path), inc))
            target = inc if inc in known else local if local in known else None
            if target is None:
                errors.append(f"{path}:{lineno}: unknown: \"{inc}\" names no file of the tree")
                continue
            dst_layer = layer_of(target)
            if src_layer in PUBLIC:
                errors.append(f"{path}:{lineno}: public: {src_layer}/ includes \"{inc}\"; "
                              f"it may use only the installed header <segforge.h>")
                continue
            if src_layer is None or dst_layer is None:
                errors.append(f"{path}:{lineno}: unknown: \"{inc}\" is outside every layer")
                continue
            if src_layer != dst_layer:
                rs, rd = LAYERS[src_layer], LAYERS[dst_layer]
                if rd > rs:
                    errors.append(f"{path}:{lineno}: up: {src_layer} (rank {rs}) includes "
                                  f"{target} of {dst_layer} (rank {rd}), a layer above it")
                elif rd == rs:
                    errors.append(f"{path}:{lineno}: sibling: {src_layer} includes {target} "
                                  f"of {dst_layer}, a layer of the same rank")
            a, b = module_of(path), module_of(target)
            if a != b:
                edges.setdefault((a, b), (path, lineno, target))

for (a, b), (path, lineno, target) in sorted(edges.items()):
    if a < b and (b, a) in edges:
        p2, l2, t2 = edges[(b, a)]
        errors.append(f"{path}:{lineno}: mutual: module {a} includes {target} of module {b}, "
                      f"and {p2}:{l2} includes {t2} back")

for e in errors:
    print(e, file=sys.stderr)
if errors:
    print(f"check_layers: {len(errors)} violation(s); see docs/architecture.md", file=sys.stderr)
    sys.exit(1)
print(f"check_layers: {len(files)} files, {sum(1 for _ in edges)} module arrows, all one-way")
EOF
