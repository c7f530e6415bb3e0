"""The house rules that code review would otherwise have to remember.

- Rooms import downwards, never in a circle: the import graph of the package (every
  import, including the ones inside functions) has no cycle.
- No private import of a dependency (``typer._click`` and the like).
- Every status list and event type is defined once, in buildctl/states.py, and the
  schema's CHECK constraints say the same.
- No command-line option is declared twice.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from buildctl import states

PACKAGE = Path(__file__).resolve().parent.parent / "buildctl"
SQL = PACKAGE.parent / "sql"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every buildctl module ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), str(path))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in out if m in modules and m != me}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert "buildctl.cli.main" in graph and graph["buildctl.agents"]  # the walk sees the package
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_import_of_a_dependency():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                if not name.startswith("buildctl") and any(part.startswith("_") and part != "__future__"
                                                           for part in name.split(".")):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []


# --------------------------------------------------------------------------- one definition per list

def _check_lists() -> dict[str, tuple[str, ...]]:
    """Every `status IN (...)`-style CHECK list of the SQLite migrations, by constraint name."""
    text = "\n".join(p.read_text() for p in sorted(SQL.glob("[0-9][0-9][0-9]_*.sql")))
    out = {}
    for name, body in re.findall(r"CONSTRAINT (\w+) CHECK \(\w+ IN \(([^)]*)\)", text):
        out[name] = tuple(re.findall(r"'([^']*)'", body))
    return out


@pytest.mark.parametrize("constraint, values", [
    ("valid_run_status", states.RUN_STATUSES),
    ("valid_wave_status", states.WAVE_STATUSES),
    ("valid_assignment_status", states.ASSIGNMENT_STATUSES),
    ("valid_status", states.AGENT_STATUSES),
    ("valid_task_list_status", states.LIST_STATUSES),
    ("valid_task_status", states.TASK_STATUSES),
    ("valid_event_type", states.EVENT_TYPES),
])
def test_the_schema_checks_hold_the_same_lists_as_states(constraint, values):
    assert _check_lists()[constraint] == values


def test_no_status_list_is_written_out_twice():
    """A literal tuple, list or set that repeats a list of buildctl/states.py (the same
    words) anywhere else is a second definition of it: import it instead."""
    defined = {frozenset(v) for k, v in vars(states).items() if k.isupper() and isinstance(v, tuple) and len(v) >= 2}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "states.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2:
                values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if len(values) == len(node.elts) and frozenset(values) in defined:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {tuple(values)}")
    assert offenders == []


def test_each_first_word_is_served_from_the_module_that_declares_it():
    """cli.MODULE_OF (which module a command line's first word imports) is the declarations'
    own map: every command found through it, no word missing, none extra."""
    import importlib

    from buildctl.cli import MODULE_OF, MODULES, command, commands, groups

    declared = {}
    for name in MODULES:
        for cmd in importlib.import_module(f"buildctl.cli.{name}").COMMANDS:
            declared.setdefault(cmd.path[0], set()).add(name)
    assert {word: {module} for word, module in MODULE_OF.items()} == declared
    assert all(command(path) is cmd for path, cmd in commands().items())
    assert command(("run",)) is None and command(("nope",)) is None and command(()) is None
    tree = {word: None for (word, *rest) in commands() if not rest}
    for word, sub, *_ in (p for p in commands() if len(p) == 2):
        tree.setdefault(word, {})[sub] = None
    assert dict(groups().items()) == tree  # iterated, the lazy tree is the whole tree


def test_no_option_is_declared_twice():
    """Each option spelling has one declaration object; commands that share one share the object."""
    from buildctl.cli import commands

    seen: dict[tuple, object] = {}
    dupes = []
    for cmd in commands().values():
        for p in cmd.params:
            if p.positional:
                continue
            key = (p.flags, p.name, p.type, p.help)
            if key in seen and seen[key] is not p:
                dupes.append(f"{cmd.name}: {p.flags[0]}")
            seen.setdefault(key, p)
    assert dupes == []


def _layers() -> dict[str, int]:
    """docs/ARCHITECTURE.md's table of rooms: module -> layer (the table a newcomer reads is the rule)."""
    doc = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text()
    out = {}
    for layer, modules in re.findall(r"^\| (\d+) \| ([^|]+) \|", doc, flags=re.M):
        for name in re.findall(r"`([a-z_.<>]+)`", modules):
            out["buildctl." + name] = int(layer)
    return out


def test_rooms_import_only_lower_layers_as_the_architecture_says():
    layers = _layers()
    graph = _graph()
    missing = sorted(m for m in graph if m not in layers and not m.startswith("buildctl.cli.")
                     and m not in ("buildctl", "buildctl.cli"))
    assert missing == [], f"modules missing from docs/ARCHITECTURE.md's table: {missing}"

    def layer(module: str) -> int:
        if module in layers:
            return layers[module]
        if module.startswith("buildctl.cli."):
            return layers.get(module, layers["buildctl.cli.<group>"])
        return -1  # the package itself

    upward = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
              for m, deps in graph.items() for d in deps if layer(d) > layer(m)]
    assert upward == []
