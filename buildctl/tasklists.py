"""Task lists: parse and validate TOML/JSON task-list files, import, list, show.

A file is validated completely before anything is written; a refusal is one
``InvalidInput`` naming the file, the entry and the reason. The import is one
transaction (task_lists_v2, tasks, task_relationships, task_file_impacts).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildctl import durations, ids, jsonstrict, planning, resolve
from buildctl.errors import InvalidInput, NotFound, UsageError, quoted
from buildctl.storage import Database

DEFAULT_TIMEOUT_S = 300.0
#: A task's timeout may not exceed a week: longer is a typo, and no worker lives that long.
MAX_TIMEOUT_S = 7 * 86400.0
#: The range of max_parallel_agents: a machine runs thousands of agents at most.
MAX_PARALLEL_AGENTS = 10_000
DEFAULT_CONFIDENCE = 0.5
IMPACT_SOURCES = ("user_declared", "ai_estimate", "pattern_match", "validated")

LIST_KEYS = {"name", "description", "max_parallel_agents", "tasks"}
TASK_KEYS = {"id", "title", "command", "validate", "timeout", "depends_on", "files", "description"}
FILE_KEYS = {"path", "op", "confidence", "source"}


@dataclass
class FileImpact:
    path: str
    op: str
    confidence: float = DEFAULT_CONFIDENCE
    source: str = "user_declared"


@dataclass
class TaskSpec:
    id: str
    title: str
    command: str
    validate: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    depends_on: list[str] = field(default_factory=list)
    files: list[FileImpact] = field(default_factory=list)
    description: str | None = None


@dataclass
class TaskListSpec:
    name: str
    tasks: list[TaskSpec]
    description: str | None = None
    max_parallel_agents: int = 3
    source_file: str | None = None


# --------------------------------------------------------------------------- parsing

def load_file(path: str | os.PathLike) -> TaskListSpec:
    """Read and validate a task-list file (TOML, or JSON by extension or content)."""
    p = Path(path)
    shown = str(path) if len(str(path)) <= 200 else str(path)[:197] + "..."
    try:
        if not p.exists():
            raise UsageError(f"no such task-list file: {shown}")
        if not p.is_file():
            raise UsageError(f"not a file: {shown}")
        raw = p.read_bytes()
    except OSError as exc:  # a name too long, a folder we may not read, …
        raise UsageError(f"cannot read {shown}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{shown}: not UTF-8 text") from None
    data = parse_text(text, shown, fmt=_format_of(p, text))
    spec = validate(data, shown)
    spec.source_file = str(p.resolve())
    return spec


def _format_of(p: Path, text: str) -> str:
    ext = p.suffix.lower()
    if ext == ".json":
        return "json"
    if ext == ".toml":
        return "toml"
    return "json" if text.lstrip().startswith(("{", "[")) else "toml"


def parse_text(text: str, shown: str, fmt: str) -> Any:
    """The parsed file: strict JSON (jsonstrict), or TOML held to the same rules (finite
    numbers, bounded nesting and size); refused with one InvalidInput naming the file."""
    if fmt == "json":
        return jsonstrict.loads(text, what=shown, max_chars=jsonstrict.MAX_FILE_CHARS)
    if len(text) > jsonstrict.MAX_FILE_CHARS:
        raise InvalidInput(f"{shown}: {len(text)} characters is more than the limit of {jsonstrict.MAX_FILE_CHARS}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{shown}: invalid TOML: {exc}") from None
    except RecursionError:
        # tomllib recurses once per nested array or inline table, in pure Python: the error
        # is raised before anything was built, and the depth check below would refuse it anyway.
        raise InvalidInput(f"{shown}: invalid TOML: nested more than {jsonstrict.MAX_DEPTH} levels deep") from None
    jsonstrict.check_value(data, what=shown)
    return data


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a table"
    return type(v).__name__


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate(data: Any, shown: str = "<input>") -> TaskListSpec:
    """Turn parsed TOML/JSON into a TaskListSpec, or raise one InvalidInput."""

    def bad(where: str, reason: str) -> InvalidInput:
        return InvalidInput(f"{shown}: {where}: {reason}")

    if not isinstance(data, dict):
        raise InvalidInput(f"{shown}: the top level must be a table/object, not {_type_name(data)}")
    unknown = sorted(set(data) - LIST_KEYS)
    if unknown:
        raise bad("top level", f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(LIST_KEYS))})")
    name = data.get("name")
    if name is None:
        raise bad("top level", "missing 'name'")
    if not isinstance(name, str) or not name.strip():
        raise bad("top level", f"'name' must be a non-empty string, not {_type_name(name)}")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise bad("top level", f"'description' must be a string, not {_type_name(description)}")
    mpa = data.get("max_parallel_agents", 3)
    if not isinstance(mpa, int) or isinstance(mpa, bool) or not 1 <= mpa <= MAX_PARALLEL_AGENTS:
        raise bad("top level", f"'max_parallel_agents' must be an integer between 1 and {MAX_PARALLEL_AGENTS}, "
                               f"not {quoted(mpa)}")
    raw_tasks = data.get("tasks")
    if raw_tasks is None:
        raise bad("top level", "no tasks: add at least one [[tasks]] entry")
    if not isinstance(raw_tasks, list):
        raise bad("top level", f"'tasks' must be a list of tables, not {_type_name(raw_tasks)}")
    if not raw_tasks:
        raise bad("top level", "no tasks: add at least one [[tasks]] entry")

    tasks: list[TaskSpec] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_tasks):
        label = f"tasks[{i}]"
        if not isinstance(raw, dict):
            raise bad(label, f"must be a table, not {_type_name(raw)}")
        tid = raw.get("id")
        if isinstance(tid, str) and tid.strip():
            label = f"task {tid.strip()} (tasks[{i}])"
        unknown = sorted(set(raw) - TASK_KEYS)
        if unknown:
            raise bad(label, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(TASK_KEYS))})")
        if tid is None:
            raise bad(label, "missing 'id'")
        if not isinstance(tid, str) or not tid.strip():
            raise bad(label, f"'id' must be a non-empty string, not {_type_name(tid)}")
        tid = tid.strip()
        if any(c.isspace() for c in tid) or "," in tid:
            raise bad(label, f"'id' {tid!r} must not contain spaces or commas")
        if tid in seen:
            raise bad(label, f"duplicate id {tid!r} (first used by tasks[{seen[tid]}])")
        seen[tid] = i
        fields: dict[str, Any] = {}
        for key in ("title", "command"):
            v = raw.get(key)
            if v is None:
                raise bad(label, f"missing '{key}'")
            if not isinstance(v, str) or not v.strip():
                raise bad(label, f"'{key}' must be a non-empty string, not {'an empty string' if isinstance(v, str) else _type_name(v)}")
            fields[key] = v
        for key in ("validate", "description"):
            v = raw.get(key)
            if v is not None and not isinstance(v, str):
                raise bad(label, f"'{key}' must be a string, not {_type_name(v)}")
        validate_cmd = raw.get("validate")
        if validate_cmd is not None and not validate_cmd.strip():
            validate_cmd = None
        timeout = raw.get("timeout")
        timeout_s = DEFAULT_TIMEOUT_S
        if timeout is not None:
            if not (isinstance(timeout, str) or _is_number(timeout)):
                raise bad(label, f"'timeout' must be a duration like \"5m\" or a number of seconds, not {_type_name(timeout)}")
            try:
                timeout_s = durations.parse(timeout, what="timeout", maximum=MAX_TIMEOUT_S)
            except UsageError as exc:
                raise bad(label, str(exc)) from None
            if timeout_s <= 0:
                raise bad(label, f"'timeout' must be greater than 0 and at most {durations.limit(MAX_TIMEOUT_S)}, "
                                 f"not {quoted(timeout)}")
        deps = raw.get("depends_on", [])
        if not isinstance(deps, list):
            raise bad(label, f"'depends_on' must be a list of task ids, not {_type_name(deps)}")
        dep_ids: list[str] = []
        for d in deps:
            if not isinstance(d, str) or not d.strip():
                raise bad(label, f"'depends_on' entries must be task id strings, not {_type_name(d)}")
            d = d.strip()
            if d not in dep_ids:
                dep_ids.append(d)
        files_raw = raw.get("files", [])
        if not isinstance(files_raw, list):
            raise bad(label, f"'files' must be a list of {{path, op}} tables, not {_type_name(files_raw)}")
        files: list[FileImpact] = []
        seen_impacts: set[tuple[str, str]] = set()
        for j, f in enumerate(files_raw):
            flabel = f"{label} files[{j}]"
            if not isinstance(f, dict):
                raise bad(flabel, f"must be a table like {{ path = \"src/app.py\", op = \"UPDATE\" }}, not {_type_name(f)}")
            unknown = sorted(set(f) - FILE_KEYS)
            if unknown:
                raise bad(flabel, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(FILE_KEYS))})")
            path = f.get("path")
            if path is None:
                raise bad(flabel, "missing 'path'")
            if not isinstance(path, str) or not path.strip():
                raise bad(flabel, f"'path' must be a non-empty string, not {_type_name(path)}")
            op = f.get("op")
            if op is None:
                raise bad(flabel, "missing 'op'")
            if not isinstance(op, str) or op.strip().upper() not in planning.OPERATIONS:
                raise bad(flabel, f"bad operation {quoted(op)} (expected one of: {', '.join(planning.OPERATIONS)})")
            op = op.strip().upper()
            conf = f.get("confidence", DEFAULT_CONFIDENCE)
            if not _is_number(conf):
                raise bad(flabel, f"'confidence' must be a number between 0 and 1, not {_type_name(conf)}")
            if not (0 <= conf <= 1):  # NaN fails this too
                raise bad(flabel, f"confidence {quoted(conf)} is outside 0..1")
            source = f.get("source", "user_declared")
            if source not in IMPACT_SOURCES:
                raise bad(flabel, f"bad source {quoted(source)} (expected one of: {', '.join(IMPACT_SOURCES)})")
            key = (path, op)
            if key in seen_impacts:
                raise bad(flabel, f"duplicate impact {op} {path!r}")
            seen_impacts.add(key)
            files.append(FileImpact(path=path, op=op, confidence=float(conf), source=source))
        tasks.append(TaskSpec(
            id=tid, title=fields["title"], command=fields["command"], validate=validate_cmd,
            timeout_s=timeout_s, depends_on=dep_ids, files=files, description=raw.get("description"),
        ))

    # Dependencies: known ids, no self-dependency, no cycle.
    for i, t in enumerate(tasks):
        for d in t.depends_on:
            if d not in seen:
                raise bad(f"task {t.id} (tasks[{i}])", f"depends on unknown task {d!r}")
            if d == t.id:
                raise bad(f"task {t.id} (tasks[{i}])", f"depends on itself: dependency cycle {t.id} -> {t.id}")
    order = [t.id for t in tasks]
    cycle = planning.find_cycle(order, {t.id: t.depends_on for t in tasks})
    if cycle:
        first = cycle[0]
        raise bad(f"task {first} (tasks[{seen[first]}])", "dependency cycle " + " -> ".join(cycle))
    return TaskListSpec(name=name.strip(), tasks=tasks, description=description, max_parallel_agents=mpa)


# --------------------------------------------------------------------------- import

def import_file(db: Database, path: str | os.PathLike) -> dict:
    """Validate ``path`` and write it as a new task list in one transaction; returns the summary."""
    spec = load_file(path)
    with db.write():
        list_id = insert_spec(db, spec)
    return {"id": list_id, "name": spec.name, "task_count": len(spec.tasks), "source_file": spec.source_file}


def insert_spec(db: Database, spec: TaskListSpec) -> str:
    """Write a validated spec; call inside the caller's ``db.write()``. Returns the list id."""
    list_id = ids.new_id("list")
    db.execute(
        "INSERT INTO task_lists_v2 (id, name, description, status, max_parallel_agents, source_file, created_at, updated_at) "
        f"VALUES (?, ?, ?, 'ready', ?, ?, {db.sql.now}, {db.sql.now})",
        (list_id, spec.name, spec.description, spec.max_parallel_agents, spec.source_file),
    )
    task_ids: dict[str, str] = {}
    rows = []
    for pos, t in enumerate(spec.tasks, start=1):
        tid = ids.new_id("task")
        task_ids[t.id] = tid
        rows.append((tid, t.id, list_id, t.title, t.description, t.command, t.validate, t.timeout_s, pos))
    db.executemany(
        "INSERT INTO tasks (id, display_id, task_list_id, title, description, command, validate_command, timeout_s, "
        f"position, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', {db.sql.now}, {db.sql.now})",
        rows,
    )
    db.executemany(
        "INSERT INTO task_relationships (source_task_id, target_task_id, relationship_type, created_at) "
        f"VALUES (?, ?, 'depends_on', {db.sql.now})",
        [(task_ids[t.id], task_ids[d]) for t in spec.tasks for d in t.depends_on],
    )
    db.executemany(
        "INSERT INTO task_file_impacts (task_id, file_path, operation, confidence, source, created_at) "
        f"VALUES (?, ?, ?, ?, ?, {db.sql.now})",
        [(task_ids[t.id], f.path, f.op, f.confidence, f.source) for t in spec.tasks for f in t.files],
    )
    return list_id


# --------------------------------------------------------------------------- lookup

def spec_signature(spec: TaskListSpec) -> list:
    """A canonical form of a list's content, to recognise a re-import of an unchanged file."""
    return [
        spec.name, spec.description, spec.max_parallel_agents,
        [[t.id, t.title, t.command, t.validate, float(t.timeout_s), sorted(t.depends_on),
          sorted((f.path, f.op, round(float(f.confidence), 9), f.source) for f in t.files), t.description]
         for t in spec.tasks],
    ]


def stored_spec(db: Database, list_id: str) -> TaskListSpec:
    lst = db.one("SELECT * FROM task_lists_v2 WHERE id = ?", (list_id,))
    if lst is None:
        raise NotFound(f"no task list {list_id!r}")
    rows = db.query("SELECT * FROM tasks WHERE task_list_id = ? ORDER BY position, id", (list_id,))
    by_id = {r["id"]: r["display_id"] for r in rows}
    deps: dict[str, list[str]] = {r["id"]: [] for r in rows}
    for r in db.query(
        "SELECT r.source_task_id, r.target_task_id FROM task_relationships r JOIN tasks t ON t.id = r.source_task_id "
        "WHERE t.task_list_id = ? AND r.relationship_type = 'depends_on' ORDER BY r.id", (list_id,)):
        deps[r["source_task_id"]].append(by_id[r["target_task_id"]])
    files: dict[str, list[FileImpact]] = {r["id"]: [] for r in rows}
    for r in db.query(
        "SELECT i.* FROM task_file_impacts i JOIN tasks t ON t.id = i.task_id WHERE t.task_list_id = ? ORDER BY i.id",
        (list_id,)):
        files[r["task_id"]].append(FileImpact(r["file_path"], r["operation"], r["confidence"], r["source"]))
    return TaskListSpec(
        name=lst["name"], description=lst["description"], max_parallel_agents=lst["max_parallel_agents"],
        source_file=lst["source_file"],
        tasks=[TaskSpec(id=r["display_id"], title=r["title"], command=r["command"], validate=r["validate_command"],
                        timeout_s=r["timeout_s"] if r["timeout_s"] is not None else DEFAULT_TIMEOUT_S,
                        depends_on=deps[r["id"]], files=files[r["id"]], description=r["description"]) for r in rows],
    )


def find_identical(db: Database, spec: TaskListSpec) -> str | None:
    """The newest list imported from the same file with exactly the same content, if any."""
    if not spec.source_file:
        return None
    candidates = db.query(
        "SELECT id FROM task_lists_v2 WHERE source_file = ? AND name = ? AND status <> 'archived' "
        "ORDER BY created_at DESC, id DESC LIMIT 5", (spec.source_file, spec.name))
    want = spec_signature(spec)
    for c in candidates:
        if spec_signature(stored_spec(db, c["id"])) == want:
            return c["id"]
    return None


# --------------------------------------------------------------------------- list / show

def list_lists(db: Database) -> list[dict]:
    return db.query(
        "SELECT l.id, l.name, l.status, l.max_parallel_agents, "
        "(SELECT COUNT(*) FROM tasks t WHERE t.task_list_id = l.id) AS task_count, "
        "(SELECT COUNT(*) FROM tasks t WHERE t.task_list_id = l.id AND t.status = 'completed') AS completed_tasks, "
        "(SELECT COUNT(*) FROM task_list_execution_runs r WHERE r.task_list_id = l.id) AS run_count, "
        "l.source_file, l.created_at, l.updated_at "
        "FROM task_lists_v2 l ORDER BY l.created_at, l.id"
    )


def show_list(db: Database, value: str) -> dict:
    list_id = resolve.task_list(db, value)["id"]
    with db.read():
        lst = db.one(
            "SELECT id, name, description, status, max_parallel_agents, source_file, created_at, updated_at "
            "FROM task_lists_v2 WHERE id = ?", (list_id,))
        tasks = db.query(
            "SELECT id, display_id, title, description, command, validate_command, timeout_s, position, status, "
            "created_at, updated_at FROM tasks WHERE task_list_id = ? ORDER BY position, id", (list_id,))
        display = {t["id"]: t["display_id"] for t in tasks}
        deps: dict[str, list[str]] = {t["id"]: [] for t in tasks}
        for r in db.query(
            "SELECT r.source_task_id, r.target_task_id FROM task_relationships r JOIN tasks t ON t.id = r.source_task_id "
            "WHERE t.task_list_id = ? AND r.relationship_type = 'depends_on' ORDER BY r.id", (list_id,)):
            deps[r["source_task_id"]].append(display.get(r["target_task_id"], r["target_task_id"]))
        files: dict[str, list[dict]] = {t["id"]: [] for t in tasks}
        for r in db.query(
            "SELECT i.task_id, i.file_path AS path, i.operation AS op, i.confidence, i.source FROM task_file_impacts i "
            "JOIN tasks t ON t.id = i.task_id WHERE t.task_list_id = ? ORDER BY i.id", (list_id,)):
            tid = r.pop("task_id")
            files[tid].append(r)
        runs = db.query(
            "SELECT execution_id, run_number, status, triggered_by, started_at, completed_at "
            "FROM task_list_execution_runs WHERE task_list_id = ? ORDER BY run_number", (list_id,))
    for t in tasks:
        t["depends_on"] = deps[t["id"]]
        t["files"] = files[t["id"]]
    lst["tasks"] = tasks
    lst["runs"] = runs
    return lst


__all__ = [
    "FileImpact", "TaskSpec", "TaskListSpec", "load_file", "validate", "import_file", "insert_spec",
    "find_identical", "list_lists", "show_list",
]
