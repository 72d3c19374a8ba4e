"""The package's shape, as numbers kept at zero: import cycles (function-local imports count), imports
that climb to a room above, function-local imports without a reason, files over 400 lines, functions over
60, options passed as ``dict(locals())`` or swallowed by ``**_ignored``."""

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dgx"

# The rooms, bottom to top: a module imports only from its own room or the rooms below.
ROOMS = (
    ("base", r"dgx(\.(errors|config|checks|plotting|stats|threads|progress|runs|storage|profiles|throughput))?$"),
    ("domain", r"dgx\.(data|masks|prep|models|methods|selection)(\..*)?$"),
    ("requests", r"dgx\.(spec|space)$"),
    ("training", r"dgx\.(train|tracking|resolve|stored|scoring|pack)$"),
    ("reading runs", r"dgx\.(report|analyze)(\..*)?$"),
    ("sweeps", r"dgx\.(sweep(\..*)?|doctor)$"),
    ("commands", r"dgx\.(cli(\..*)?|__main__)$"),
)
IMPORT = re.compile(r"\s*(from \S+ )?import ")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def room(module: str) -> int:
    return next(i for i, (_, pattern) in enumerate(ROOMS) if re.match(pattern, module))


def imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[Path, int]]]:
    """Module -> the dgx modules it imports (anywhere in it); and the function-local imports."""
    edges, local = defaultdict(set), []
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if id(node) in inside:
                local.append((path, node.lineno))
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                targets = [a.name for a in node.names]
            for target in targets:
                while target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in mods and target != name:
                    edges[name].add(target)
    return edges, local


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_and_no_import_climbs_to_a_room_above():
    mods = modules()
    edges, _ = imports(mods)
    assert cycles(edges) == []
    upward = [f"{a} -> {b}" for a, targets in edges.items() for b in targets if room(b) > room(a)]
    assert upward == []


def test_every_function_local_import_says_why():
    """Only where it keeps `dgx --help` or a flag check fast; one comment line on it, or on the first
    import of its block, or right above that."""
    _, local = imports(modules())
    missing = []
    for path, line in local:
        lines = path.read_text().splitlines()
        k = line - 1
        while k > 0 and IMPORT.match(lines[k - 1]) and "#" not in lines[k]:
            k -= 1
        if "#" not in lines[k] and not lines[k - 1].strip().startswith("#"):
            missing.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert missing == []


def test_files_and_functions_stay_small():
    big, long = [], []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            big.append(path.name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.name}:{node.name}")
    assert (big, long) == ([], [])


def test_options_are_passed_by_name_not_swallowed():
    found = [f"{p.relative_to(PACKAGE.parent)}" for p in PACKAGE.rglob("*.py")
             if "dict(locals())" in p.read_text() or "**_ignored" in p.read_text()]
    assert found == []


def test_the_checker_finds_what_it_looks_for(tmp_path):
    """The helpers above on a hand-made graph: a cycle and a climb are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert room("dgx.cli.sweep") > room("dgx.sweep.plan") > room("dgx.report.tables") > room("dgx.train")
    assert room("dgx.train") > room("dgx.spec") > room("dgx.methods.rrr") > room("dgx.errors")
