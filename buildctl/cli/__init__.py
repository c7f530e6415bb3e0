"""The command line.

Each group module (``runs``, ``tasks``, ``agents``, ``log``, ``checkpoints``, ``admin``)
declares its commands once (``buildctl.cli.grammar.Command``) with a small runner that
calls one domain function and hands the result to ``buildctl.render``. ``main`` serves
them; ``typer_app`` builds the Typer app from the same declarations for ``--help``,
shell completion and docs/CLI.md.

Stdlib only at import: the declarations are data, and runners import what they need.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The group modules, in the order `buildctl --help` lists their commands.
MODULES = ("tasks", "runs", "agents", "log", "checkpoints", "admin")

#: The module that declares the commands under each first word: serving a command
#: imports that module only (all six cost a script's every call ~1.5 ms). A test checks
#: this table against the declarations.
MODULE_OF = {"tasks": "tasks", "run": "runs", "waves": "runs", "agent": "agents", "heartbeat": "agents",
             "log": "log", "checkpoint": "checkpoints", "doctor": "admin", "gc": "admin", "metrics": "admin",
             "migrate": "admin"}

_commands: dict = {}
_by_module: dict = {}


def _declared(module: str) -> dict:
    """The commands ``buildctl.cli.<module>`` declares, by their words (read once: finding a
    command looks its module up twice, for the tree and for the command)."""
    if module not in _by_module:
        import importlib

        _by_module[module] = {cmd.path: cmd for cmd in importlib.import_module(f"buildctl.cli.{module}").COMMANDS}
    return _by_module[module]


def commands() -> dict:
    """Every declared command by its words: {("log", "add"): Command, ...}."""
    if not _commands:
        for name in MODULES:
            _commands.update(_declared(name))
    return _commands


def command(words: tuple):
    """The command declared under ``words``, or None (a bare group, or no such command)."""
    module = MODULE_OF.get(words[0]) if words else None
    return _declared(module).get(tuple(words)) if module else None


class _Tree(Mapping):
    """The command tree ``groups`` returns: a first word's subcommands are read from its
    module when that word is looked up (``grammar.locate`` looks up one or two words),
    every module's when the tree is iterated."""

    def __init__(self):
        self._subs: dict = {}

    def __getitem__(self, word):
        if word not in self._subs:
            subs = {path[1]: None for path in _declared(MODULE_OF[word]) if path[0] == word and len(path) == 2}
            self._subs[word] = subs or None
        return self._subs[word]

    def __contains__(self, word) -> bool:
        return word in MODULE_OF

    def __iter__(self):
        return iter(MODULE_OF)

    def __len__(self) -> int:
        return len(MODULE_OF)


def groups() -> Mapping:
    """The command tree for finding a command in argv: {"waves": None, "run": {"show": None, ...}}."""
    return _Tree()


def group_help() -> dict:
    """{"run": "Execution runs: …", …}: each group's one-line help."""
    import importlib

    out = {}
    for name in MODULES:
        group = getattr(importlib.import_module(f"buildctl.cli.{name}"), "GROUP", None)
        if group is not None:
            out[group[0]] = group[1]
    return out
