"""The package is laid out as the pipeline: a module imports only from its own layer or lower,
and no two modules import each other, even through a chain. Checked on the source with ``ast``,
imports inside functions included (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "transferlab"

# Lowest first. The top-level name of a module (its first component under transferlab) decides.
# The package's own __init__ is at the bottom: it holds __version__ and imports the rest only
# lazily, by name (PEP 562), which is no import edge.
LAYERS = [
    {"__init__", "errors", "_io", "progress", "options", "display"},
    {"data"},
    {"models"},
    {"runtime"},
    {"report"},
    {"features"},
    {"probe"},
    {"inference", "run"},
    {"evaluation"},
    {"training"},
    {"explain", "attack"},
    {"export"},
    {"apps", "sklearn"},
    {"cli", "__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports, anywhere in the file."""
    me = module_name(path)
    base = me.split(".") if is_package(path) else me.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("transferlab")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1]
                target = ".".join(stem + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("transferlab"):
                continue
            subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
            found |= subs or {target}
            if subs and len(subs) < len(node.names):
                found.add(target)
    found.discard(me)
    return {m for m in found if m in modules}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    modules = set(files)
    return {m: imports(p, modules) for m, p in files.items()}


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return LAYER[top]


def test_every_module_has_a_layer():
    missing = sorted({m.split(".")[1] for m in graph() if "." in m and m.split(".")[1] not in LAYER})
    assert not missing, f"add these to LAYERS: {missing}"


def test_no_upward_imports():
    bad = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
           for m, deps in graph().items() for d in deps
           if layer_of(d) > layer_of(m) and not d.startswith(m + ".")]
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles():
    g = graph()
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    g = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in g.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d):], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("heavy", ["torch", "torchvision", "timm", "sklearn", "matplotlib"])
def test_import_and_cli_stay_light(heavy):
    """``import transferlab`` and the CLI module load no heavy library (``--help`` is instant)."""
    import subprocess
    import sys

    code = f"import sys, transferlab, transferlab.cli; print({heavy!r} in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def _classes() -> dict[str, set[str]]:
    """Class name -> the modules that define a class of that name."""
    out: dict[str, set[str]] = {}
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ClassDef):
                out.setdefault(node.name, set()).add(module_name(p))
    return out


def _annotation_names(node: ast.AST | None) -> set[str]:
    """Identifiers in an annotation, string annotations (``"Run"``, ``"x.Run | None"``) included."""
    if node is None:
        return set()
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return _annotation_names(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return set()
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    for c in ast.walk(node):
        if c is not node and isinstance(c, ast.Constant) and isinstance(c.value, str):
            names |= _annotation_names(c)
    return names


def test_no_parameter_is_typed_from_a_higher_layer():
    """A parameter annotated with a class that only a higher layer defines is an upward
    dependency even without an import (a string annotation, a duck-typed protocol)."""
    owners = {name: mods for name, mods in _classes().items() if len(mods) == 1}
    bad = []
    for p in PKG.rglob("*.py"):
        me = module_name(p)
        for fn in ast.walk(ast.parse(p.read_text())):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs, fn.args.vararg, fn.args.kwarg]
            for a in filter(None, args):
                for name in _annotation_names(a.annotation) & owners.keys():
                    (owner,) = owners[name]
                    if layer_of(owner) > layer_of(me):
                        bad.append(f"{me}.{fn.name}({a.arg}: {name}) - {name} is defined in {owner}")
    assert not bad, "\n".join(sorted(bad))


def _src_files() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py"))


def test_only_run_config_reads_config_json():
    """``config.json`` is read and written by :class:`~transferlab.inference.config.RunConfig`
    alone; nobody reads a run's config by key."""
    own = PKG / "inference" / "config.py"
    named = [str(p.relative_to(PKG)) for p in _src_files() if p != own and "config.json" in p.read_text()]
    by_key = [f"{p.relative_to(PKG)}:{i}" for p in _src_files() if p != own
              for i, line in enumerate(p.read_text().splitlines(), 1)
              if re.search(r"\.config\.get\(|\.config\[|\bconfig\.get\(\"(train|data|predict|head)", line)]
    assert not named and not by_key, (named, by_key)


def test_one_logistic_regression():
    """The probe is written once: every linear fit goes through :mod:`transferlab.probe`."""
    hits = [f"{p.relative_to(PKG)}:{i}" for p in _src_files()
            for i, line in enumerate(p.read_text().splitlines(), 1) if "LogisticRegression(" in line]
    assert len(hits) == 1 and hits[0].startswith("probe/"), hits


def test_files_and_functions_stay_short():
    """No module over 400 lines and no function over 60, the CLI's command declarations excepted
    (its file, and the option declarations in a command's signature)."""
    cli = Path("apps/cli.py")
    long_files = [f"{p.relative_to(PKG)} ({n})" for p in _src_files()
                  if (n := len(p.read_text().splitlines())) > 400 and p.relative_to(PKG) != cli]

    def length(p: Path, fn) -> int:
        start = fn.body[0].lineno if p.relative_to(PKG) == cli else fn.lineno
        return fn.end_lineno - start + 1

    long_fns = [f"{p.relative_to(PKG)}:{fn.lineno} {fn.name} ({length(p, fn)})"
                for p in _src_files() for fn in ast.walk(ast.parse(p.read_text()))
                if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and length(p, fn) > 60]
    assert not long_files and not long_fns, "\n".join(long_files + long_fns)
