"""The import structure of fm4npp (issue 18): no cycles, layers point down only, light imports.

The graph is built from the source with `ast`, so EVERY import counts as an edge: module level,
inside a function, and ``importlib.import_module("fm4npp....")`` / ``__import__`` with a literal
name (a hidden import is still an arrow).

Layers, bottom to top (DESIGN.md, "Layers point down only: sim -> data -> serialize -> model ->
pretrain -> downstream -> studies/analysis; small shared helpers below them all"). A module may
import modules of its own layer or of a lower one, never of a higher one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fm4npp"

# (layer name, module prefixes). The first matching prefix of the LONGEST length wins, so a
# single module may sit in a different layer from the rest of its package; each such case says why.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # Small shared helpers below everything (atomic files, KEY=VALUE overrides, data home, MLflow
    # run bookkeeping).
    ("helpers", ("fm4npp", "fm4npp.files", "fm4npp.overrides", "fm4npp.paths", "fm4npp.runs",
                 "fm4npp.bench_report")),
    # The Parquet event format: the schema constants and the atomic shard/manifest writer. These
    # are the DESIGN's "small shared helpers (atomic write, manifest, constants)" that happen to
    # live in fm4npp/data/: sim WRITES this format (sim/run.py, sim/digitize.py), data reads it.
    # data.errors (Problem, DataError; a leaf) is here because the one manifest reader,
    # shards.read_manifest, raises DataError.
    ("format", ("fm4npp.data.schema", "fm4npp.data.shards", "fm4npp.data.errors")),
    # The downstream's typed config is plain data (imports only fm4npp.overrides): the run
    # spec (fm4npp.spec, pretrain layer) nests it, and pretraining runs write that spec.
    ("downstream-config", ("fm4npp.downstream.config",)),
    # Pure-numpy scoring shared by downstream and the studies; a leaf (imports nothing of fm4npp).
    ("metrics", ("fm4npp.metrics",)),
    ("sim", ("fm4npp.sim",)),
    ("data", ("fm4npp.data",)),
    ("serialize", ("fm4npp.serialize",)),
    # The Ray Data / plain-Python pipeline USES serialization (bins, serialize_event), so it sits
    # above serialize although it lives in fm4npp/data/ (pretrain/loop.py, pretrain/run.py and
    # downstream/splits.py import it by that path). Nothing in serialize may import it.
    ("pipeline", ("fm4npp.data.pipeline",)),
    ("model", ("fm4npp.model",)),
    # fm4npp.spec: a run's nested spec (every stage's config), written by pretraining runs
    ("pretrain", ("fm4npp.pretrain", "fm4npp.spec")),
    ("downstream", ("fm4npp.downstream",)),
    # Scaling studies: Ray Tune grids of pretraining runs.
    ("study", ("fm4npp.study",)),
    # Reading finished runs back: scaling-law fits and the paper's figures (analysis/*.py and
    # `fm4npp analysis` are thin layers over it).
    ("analysis", ("fm4npp.analysis",)),
    # The console script's entry point.
    ("app", ("fm4npp.cli",)),
]
LAYER_RANK = {name: i for i, (name, _) in enumerate(LAYERS)}

# Edges (importer, imported) that break the layer order today and are tracked to be fixed, each
# with where it is and what the fix is. Any edge not listed here that breaks the order fails.
KNOWN_LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {}

# Importing these must not import Ray (a plain-Python / single-GPU user has no cluster).
RAY_FREE = ["fm4npp.serialize", "fm4npp.serialize.bins", "fm4npp.serialize.events", "fm4npp.serialize.splits",
            "fm4npp.data.io", "fm4npp.data.pipeline", "fm4npp.model", "fm4npp.sim.geometry"]


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The fm4npp module that `name` (a module or a name inside one) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _literal_import(node: ast.Call) -> str | None:
    """The name in importlib.import_module("...") / __import__("...") with a literal string."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if called in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def _imports(module: str, path: Path):
    """(imported fm4npp module, line) for every import in `module`, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # `from pkg import sub` imports the submodule; `from mod import name` imports mod.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        elif isinstance(node, ast.Call):
            name = _literal_import(node)
            names = [name] if name else []
        for name in names:
            if name.split(".")[0] != "fm4npp":
                continue
            target = _resolve(name)
            if target and target != module:
                yield target, node.lineno


def _graph() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {m: {} for m in MODULES}
    for module, path in MODULES.items():
        for target, line in _imports(module, path):
            graph[module].setdefault(target, line)
    return graph


GRAPH = _graph()


def _where(a: str, b: str) -> str:
    return f"{MODULES[a].relative_to(ROOT)}:{GRAPH[a][b]} ({a} -> {b})"


def _sccs(graph) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    out.append(comp)
    return out


def _cycle_in(component: list[str]) -> list[str]:
    """One cycle through a strongly connected component, as a path [m0, m1, ..., m0]."""
    members = set(component)
    start = sorted(component)[0]
    prev, queue = {start: None}, [start]
    while queue:  # breadth first, inside the component, back to start
        node = queue.pop(0)
        for child in GRAPH[node]:
            if child == start:
                path, n = [], node
                while n is not None:
                    path.append(n)
                    n = prev[n]
                return path[::-1] + [start]
            if child in members and child not in prev:
                prev[child] = node
                queue.append(child)
    return sorted(component)


def layer_of(module: str) -> str | None:
    best, best_len = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    return best


# ------------------------------------------------------------------ the tests

def test_graph_sees_function_level_and_hidden_imports():
    # the walker itself: function-level imports are edges (bins fits through splits lazily)
    assert "fm4npp.serialize.splits" in GRAPH["fm4npp.serialize.bins"]
    assert "fm4npp.data.io" in GRAPH["fm4npp.serialize.splits"]
    tree = ast.parse('import importlib\ndef f():\n    importlib.import_module("fm4npp.sim.geometry")\n')
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert [_literal_import(c) for c in calls] == ["fm4npp.sim.geometry"]


def test_no_import_cycles():
    cycles = [c for c in _sccs(GRAPH) if len(c) > 1]
    if cycles:
        lines = []
        for comp in cycles:
            path = _cycle_in(comp)
            lines.append(" -> ".join(path) + "\n    " + "\n    ".join(_where(a, b) for a, b in zip(path, path[1:])))
        pytest.fail("import cycles in fm4npp:\n" + "\n".join(lines))


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, f"modules in no layer of tests/test_imports.py LAYERS (place them): {missing}"


def test_layers_point_down_only():
    bad = []
    for a, targets in GRAPH.items():
        for b in targets:
            la, lb = layer_of(a), layer_of(b)
            if LAYER_RANK[lb] > LAYER_RANK[la] and (a, b) not in KNOWN_LAYER_EXCEPTIONS:
                bad.append(f"{_where(a, b)}: layer {la!r} imports the higher layer {lb!r}")
    assert not bad, "upward imports (a lower layer must not import a higher one):\n" + "\n".join(bad)


def test_known_exceptions_still_exist():
    # a fixed exception must leave the list, so it cannot come back silently
    gone = [edge for edge in KNOWN_LAYER_EXCEPTIONS if edge[1] not in GRAPH.get(edge[0], {})]
    assert not gone, f"these known layer exceptions are fixed; remove them from KNOWN_LAYER_EXCEPTIONS: {gone}"


def test_layer_rules_catch_the_old_cycle():
    # the check is not vacuous: the former serialize/bins.py -> data/pipeline.py arrow is upward
    assert LAYER_RANK[layer_of("fm4npp.data.pipeline")] > LAYER_RANK[layer_of("fm4npp.serialize.bins")]
    assert LAYER_RANK[layer_of("fm4npp.sim.geometry")] < LAYER_RANK[layer_of("fm4npp.serialize.coords")]
    assert layer_of("fm4npp.data.io") == "data" and layer_of("fm4npp.data.schema") == "format"


# Where code runs from a checkout as `python DIR/x.py` or as the package: none of it may edit
# sys.path (the package is installed; a script imports fm4npp like any user would).
SYS_PATH_DIRS = ("fm4npp", "analysis", "benchmarks", "scripts", "studies")
# (file, line text) of the sys.path edits still allowed, each with why. A fixed one must leave.
SYS_PATH_ALLOWED: set[tuple[str, str]] = set()
_SYS_PATH_MUTATORS = {"insert", "append", "extend", "remove", "pop", "clear", "reverse", "sort",
                      "__setitem__", "__delitem__", "__iadd__"}


def sys_path_edits(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, what) for every edit of sys.path in `source`: a mutating method call, an
    assignment (sys.path = / sys.path[...] = / +=), a del, `from sys import path` (then edited
    under another name) and site.addsitedir; `import sys as s` is followed."""
    tree = ast.parse(source, filename)
    sys_names, site_names = {"sys"}, {"site"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "sys":
                    sys_names.add(a.asname or "sys")
                if a.name == "site":
                    site_names.add(a.asname or "site")

    def is_sys_path(n) -> bool:
        return isinstance(n, ast.Attribute) and n.attr == "path" and isinstance(n.value, ast.Name) \
            and n.value.id in sys_names

    def target(n) -> bool:  # sys.path itself, or an item / slice of it
        return is_sys_path(n) or (isinstance(n, ast.Subscript) and is_sys_path(n.value))

    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_sys_path(node.value) and node.attr in _SYS_PATH_MUTATORS:
            out.append((node.lineno, f"sys.path.{node.attr}"))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            if any(target(t) for t in targets):
                out.append((node.lineno, "del sys.path" if isinstance(node, ast.Delete) else "sys.path ="))
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" \
                and any(a.name == "path" for a in node.names):
            out.append((node.lineno, "from sys import path"))
        elif isinstance(node, ast.ImportFrom) and node.module == "site" \
                and any(a.name == "addsitedir" for a in node.names):
            out.append((node.lineno, "from site import addsitedir"))
        elif isinstance(node, ast.Attribute) and node.attr == "addsitedir" \
                and isinstance(node.value, ast.Name) and node.value.id in site_names:
            out.append((node.lineno, "site.addsitedir"))
    return sorted(out)


def _sys_path_edits_in_tree() -> list[tuple[str, int, str, str]]:
    found = []
    for d in SYS_PATH_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if "__pycache__" in rel:
                continue
            text = path.read_text()
            lines = text.splitlines()
            for line, what in sys_path_edits(text, rel):
                found.append((rel, line, what, lines[line - 1].strip()))
    return found


def test_sys_path_check_catches_every_form():
    # the checker itself, on the forms an edit takes (it must not pass vacuously)
    src = ("import sys\nimport sys as s2\nimport site\nfrom sys import path\n"
           "sys.path.insert(0, 'a')\ns2.path.append('b')\nsys.path = ['c']\nsys.path[:0] = ['d']\n"
           "sys.path += ['e']\ndel sys.path[0]\nsite.addsitedir('f')\nprint(sys.path[0], sys.argv)\n")
    assert [line for line, _ in sys_path_edits(src)] == [4, 5, 6, 7, 8, 9, 10, 11]
    assert sys_path_edits("import sys\nprint(sys.path, len(sys.path))\nx = sys.path[0]\n") == []
    # every directory it polices is there and holds Python (a rename must not empty the check)
    for d in SYS_PATH_DIRS:
        assert list((ROOT / d).rglob("*.py")), f"{d}/ has no Python files: update SYS_PATH_DIRS"


def test_no_sys_path_manipulation():
    found = _sys_path_edits_in_tree()
    bad = [f"{rel}:{line}: {what}: {text}" for rel, line, what, text in found
           if (rel, text) not in SYS_PATH_ALLOWED]
    assert not bad, ("no sys.path edits in " + ", ".join(f"{d}/" for d in SYS_PATH_DIRS)
                     + " (import fm4npp, which is installed; load a file by "
                       "importlib.util.spec_from_file_location):\n" + "\n".join(bad))


def test_allowed_sys_path_edits_still_exist():
    # a removed edit must leave SYS_PATH_ALLOWED, so it cannot come back silently
    present = {(rel, text) for rel, _, _, text in _sys_path_edits_in_tree()}
    gone = sorted(SYS_PATH_ALLOWED - present)
    assert not gone, f"these sys.path edits are gone; remove them from SYS_PATH_ALLOWED: {gone}"


@pytest.mark.parametrize("module", RAY_FREE)
def test_import_does_not_pull_ray(module):
    code = (f"import sys; import {module}; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"import {module} imports Ray: {out.stdout.strip()[:300]}"
