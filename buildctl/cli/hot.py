"""Typer commands generated from the hot-path declarations (buildctl.hotspec).

The lean path (buildctl.lean) serves these commands at run time; the generated
Typer commands give them ``--help``, shell completion and a place in the app's
command tree, and behave the same when they do run (both call
``hotspec.execute`` with the raw strings). Every parameter is declared to Click as
a string: conversion and range checks happen once, in ``hotspec.convert``, so the
two paths refuse the same values with the same message.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Optional

import typer

from buildctl import hotspec
from buildctl.cli.common import State, complete_agent, complete_checkpoint, complete_execution, complete_list


def _completer(p: hotspec.Param):
    if p.complete:
        values = tuple(p.complete)

        def complete(incomplete: str) -> list[str]:
            return [v for v in values if v.startswith(incomplete)]

        return complete
    if p.metavar == "EXEC":
        return complete_execution
    if p.metavar == "ID":
        return complete_agent
    if p.metavar == "LIST":
        return complete_list
    if p.metavar == "CHECKPOINT":
        return complete_checkpoint
    return None


def _annotation(p: hotspec.Param):
    help_text = p.help
    if p.type != "str" and (p.min is not None or p.max is not None) and p.metavar not in ("0-100",):
        lo = "" if p.min is None else f"{p.min:g}"
        hi = "" if p.max is None else f"{p.max:g}"
        help_text += f" [{lo}..{hi}]" if hi else f" [>= {lo}]"
    kwargs = {"help": help_text, "metavar": p.metavar, "show_default": False}
    completer = _completer(p)
    if completer is not None:
        kwargs["autocompletion"] = completer
    if p.positional:
        info = typer.Argument(**kwargs)
        py_type = str if p.required else Optional[str]
    elif p.type == "bool":
        kwargs.pop("metavar")
        info = typer.Option(*p.flags, **kwargs)
        py_type = bool
    else:
        info = typer.Option(*p.flags, **kwargs)
        py_type = Optional[list[str]] if p.multiple else (str if p.required else Optional[str])
    return Annotated[py_type, info]


def make_command(cmd: hotspec.Command):
    """A Typer command function with an ``inspect.Signature`` built from ``cmd.params``."""

    def command(**raw):
        return hotspec.execute(cmd, raw, State.db_location)

    params = []
    annotations = {}
    for p in cmd.params:
        ann = _annotation(p)
        default = inspect.Parameter.empty if p.required else (False if p.type == "bool" else None)
        params.append(inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann))
        annotations[p.name] = ann
    # Required parameters first, as Python signatures demand; Click orders by position anyway.
    params.sort(key=lambda q: q.default is not inspect.Parameter.empty)
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = annotations
    command.__name__ = "_".join(cmd.path)
    command.__qualname__ = command.__name__
    command.__doc__ = cmd.help
    return command


def register(group: typer.Typer, cmd: hotspec.Command, name: str | None = None) -> None:
    group.command(name or cmd.path[-1], help=cmd.help, short_help=cmd.short_help)(make_command(cmd))
