"""The command line.

Each group module (``runs``, ``tasks``, ``agents``, ``log``, ``checkpoints``, ``admin``)
declares its commands once (``buildctl.cli.grammar.Command``) with a small runner that
calls one domain function and hands the result to ``buildctl.render``. ``main`` serves
them; ``typer_app`` builds the Typer app from the same declarations for ``--help``,
shell completion and docs/CLI.md.

Stdlib only at import: the declarations are data, and runners import what they need.
"""

from __future__ import annotations

#: The group modules, in the order `buildctl --help` lists their commands.
MODULES = ("tasks", "runs", "agents", "log", "checkpoints", "admin")

_commands: dict = {}


def commands() -> dict:
    """Every declared command by its words: {("log", "add"): Command, ...}."""
    if not _commands:
        import importlib

        for name in MODULES:
            module = importlib.import_module(f"buildctl.cli.{name}")
            for cmd in module.COMMANDS:
                _commands[cmd.path] = cmd
    return _commands


def groups() -> dict:
    """The command tree for finding a command in argv: {"waves": None, "run": {"show": None, ...}}."""
    tree: dict = {}
    for path in commands():
        if len(path) == 1:
            tree[path[0]] = None
        else:
            tree.setdefault(path[0], {})[path[1]] = None
    return tree


def group_help() -> dict:
    """{"run": "Execution runs: …", …}: each group's one-line help."""
    import importlib

    out = {}
    for name in MODULES:
        group = getattr(importlib.import_module(f"buildctl.cli.{name}"), "GROUP", None)
        if group is not None:
            out[group[0]] = group[1]
    return out
