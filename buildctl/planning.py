"""The wave planner: a pure function, no database, stdlib only.

Input: the tasks in file order, their dependencies, their file impacts and a
confidence threshold. Output: the waves (lists of task keys) and every pair of
tasks that conflicts on a file.

The rules, exactly:

* A task sits in a later wave than every task it depends on. With no file
  conflicts, wave 1 holds the tasks with no dependencies and wave k the tasks whose
  dependencies all sit in waves < k (so the wave count is the longest chain).
* Two tasks conflict when both touch the same path with a conflicting pair of
  operations (CREATE/CREATE, CREATE/DELETE, UPDATE/UPDATE, UPDATE/DELETE,
  DELETE/DELETE, DELETE/READ) and both confidences are >= the threshold.
* Of two conflicting tasks that would share a wave, the one later in the file moves
  to the next wave (and its dependents move with it, because they may only start
  after it).

Algorithm (list scheduling, one wave at a time): the *ready* tasks of wave k are
those whose dependencies all sit in waves < k. They are taken in file order; a task
that conflicts with a task already taken into wave k is deferred to wave k+1.
Conflicts are found through an index by path (only impacts at or above the
threshold can ever conflict), so a task costs O(its impacts) per wave it is
considered for; there is no all-pairs comparison. The result depends only on the
input, never on hashing or timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping, Sequence

OPERATIONS = ("CREATE", "UPDATE", "DELETE", "READ")
DEFAULT_THRESHOLD = 0.6

#: For each operation, the operations it conflicts with (the matrix is symmetric).
CONFLICTS_WITH: dict[str, frozenset[str]] = {
    "CREATE": frozenset({"CREATE", "DELETE"}),
    "UPDATE": frozenset({"UPDATE", "DELETE"}),
    "DELETE": frozenset({"CREATE", "UPDATE", "DELETE", "READ"}),
    "READ": frozenset({"DELETE"}),
}


#: Each conflicting unordered pair once, in a fixed order.
_CONFLICTING_OP_PAIRS = tuple(
    (a, b) for i, a in enumerate(OPERATIONS) for b in OPERATIONS[i:] if b in CONFLICTS_WITH[a]
)


@dataclass(frozen=True)
class Impact:
    task: Hashable
    path: str
    op: str
    confidence: float = 0.5


@dataclass(frozen=True)
class ConflictPair:
    """Two tasks that must not share a wave because of one file.

    ``first`` comes earlier in the file than ``second``. When the pair conflicts on
    several paths, the alphabetically first path is reported.
    """

    first: Hashable
    second: Hashable
    path: str
    first_op: str
    second_op: str
    first_confidence: float
    second_confidence: float


@dataclass
class Plan:
    waves: list[list[Hashable]]
    #: task -> wave number (1-based)
    wave_of: dict[Hashable, int] = field(default_factory=dict)
    conflicts: list[ConflictPair] = field(default_factory=list)
    #: tasks that moved to a later wave than their dependencies alone would put them in
    moved: list[Hashable] = field(default_factory=list)


class CycleError(ValueError):
    def __init__(self, cycle: list[Hashable]):
        self.cycle = cycle
        super().__init__("dependency cycle: " + " -> ".join(map(str, cycle)))


class UnknownTaskError(ValueError):
    pass


def plan_waves(
    tasks: Sequence[Hashable],
    depends_on: Mapping[Hashable, Iterable[Hashable]] | Iterable[tuple[Hashable, Hashable]],
    impacts: Iterable[Impact | tuple] = (),
    threshold: float = DEFAULT_THRESHOLD,
) -> Plan:
    """Plan ``tasks`` (in file order) into waves.

    ``depends_on`` is either a mapping task -> the tasks it waits for, or an iterable
    of (task, dependency) pairs. ``impacts`` are ``Impact`` objects or
    (task, path, op, confidence) tuples. Raises ``CycleError`` for a cycle and
    ``UnknownTaskError`` for a dependency or impact on a task not in ``tasks``.
    """
    n = len(tasks)
    index: dict[Hashable, int] = {}
    for i, t in enumerate(tasks):
        if t in index:
            raise ValueError(f"task {t!r} is listed twice")
        index[t] = i

    # Dependencies as integer adjacency lists (deduplicated).
    deps: list[set[int]] = [set() for _ in range(n)]
    try:
        if isinstance(depends_on, Mapping):
            for t, ds in depends_on.items():
                deps[index[t]].update([index[d] for d in ds])
        else:
            for t, d in depends_on:  # type: ignore[misc]
                deps[index[t]].add(index[d])
    except KeyError as exc:
        raise UnknownTaskError(f"unknown task {exc.args[0]!r}") from None
    dependents: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for ti in range(n):
        for di in deps[ti]:
            if di == ti:
                raise CycleError([tasks[ti], tasks[ti]])
            dependents[di].append(ti)
        indegree[ti] = len(deps[ti])

    # Impacts that can conflict at all (confidence >= threshold), per task.
    hot: list[list[tuple[str, str, float]]] = [[] for _ in range(n)]
    for imp in impacts:
        if not isinstance(imp, Impact):
            imp = Impact(*imp)
        op = str(imp.op).upper()
        if op not in CONFLICTS_WITH:
            raise ValueError(f"unknown operation {imp.op!r}")
        ti = _idx(index, imp.task)
        if imp.confidence >= threshold:
            hot[ti].append((imp.path, op, float(imp.confidence)))

    # List scheduling, one wave at a time.
    waves: list[list[Hashable]] = []
    wave_of_i = [0] * n
    level = [1] * n  # the wave dependencies alone would give (for `moved`)
    ready = sorted(i for i in range(n) if indegree[i] == 0)
    placed = 0
    while ready:
        wave_no = len(waves) + 1
        taken: list[int] = []
        deferred: list[int] = []
        held: dict[str, set[str]] = {}  # path -> operations held in this wave
        for ti in ready:
            mine = hot[ti]
            clash = False
            for path, op, _ in mine:
                ops = held.get(path)
                if ops and not ops.isdisjoint(CONFLICTS_WITH[op]):
                    clash = True
                    break
            if clash:
                deferred.append(ti)
                continue
            taken.append(ti)
            for path, op, _ in mine:
                held.setdefault(path, set()).add(op)
        released: list[int] = []
        for ti in taken:
            wave_of_i[ti] = wave_no
            for si in dependents[ti]:
                if level[si] < wave_no + 1:
                    level[si] = wave_no + 1
                indegree[si] -= 1
                if indegree[si] == 0:
                    released.append(si)
        placed += len(taken)
        waves.append([tasks[i] for i in taken])
        if released:
            released.sort()
            ready = _merge(deferred, released)
        else:
            ready = deferred

    if placed != n:
        raise CycleError(find_cycle(tasks, deps))

    plan = Plan(waves=waves, wave_of={tasks[i]: wave_of_i[i] for i in range(n)})
    plan.moved = [tasks[i] for i in range(n) if wave_of_i[i] > level[i]]
    plan.conflicts = conflict_pairs(tasks, hot)
    return plan


def _idx(index: dict, t: Hashable) -> int:
    try:
        return index[t]
    except KeyError:
        raise UnknownTaskError(f"unknown task {t!r}") from None


def _merge(a: list[int], b: list[int]) -> list[int]:
    """Merge two sorted lists of distinct ints (linear; sorted() on two runs is too)."""
    out = a + b
    out.sort()
    return out


def conflict_pairs(tasks: Sequence[Hashable], hot: list[list[tuple[str, str, float]]]) -> list[ConflictPair]:
    """Every pair of tasks conflicting on some path, ordered by (first, second) file position."""
    by_path: dict[str, list[tuple[int, str, float]]] = {}
    for ti, mine in enumerate(hot):
        for path, op, conf in mine:
            by_path.setdefault(path, []).append((ti, op, conf))
    found: dict[tuple[int, int], tuple[str, str, str, float, float]] = {}
    for path in sorted(by_path):
        entries = by_path[path]
        if len(entries) < 2:
            continue
        by_op: dict[str, list[tuple[int, float]]] = {}
        for ti, op, conf in entries:
            by_op.setdefault(op, []).append((ti, conf))
        for op_a, op_b in _CONFLICTING_OP_PAIRS:
            la, lb = by_op.get(op_a), by_op.get(op_b)
            if not la or not lb:
                continue
            for ta, ca in la:
                for tb, cb in lb:
                    if ta == tb:
                        continue
                    if ta < tb:
                        key, rec = (ta, tb), (path, op_a, op_b, ca, cb)
                    else:
                        key, rec = (tb, ta), (path, op_b, op_a, cb, ca)
                    if key not in found:
                        found[key] = rec
    return [
        ConflictPair(tasks[a], tasks[b], *found[(a, b)])
        for a, b in sorted(found)
    ]


def find_cycle(tasks: Sequence[Hashable], deps: list[set[int]] | Mapping) -> list[Hashable]:
    """One dependency cycle as [a, b, …, a] (a depends on b …), found deterministically.

    ``deps`` is either integer adjacency (as inside plan_waves) or a mapping
    task -> dependencies. Returns [] when there is no cycle.
    """
    if isinstance(deps, Mapping):
        index = {t: i for i, t in enumerate(tasks)}
        adj = [sorted(index[d] for d in deps.get(t, ()) if d in index) for t in tasks]
    else:
        adj = [sorted(d) for d in deps]
    n = len(tasks)
    color = [0] * n  # 0 new, 1 on the stack, 2 done
    for start in range(n):
        if color[start]:
            continue
        stack = [(start, 0)]
        path = [start]
        color[start] = 1
        while stack:
            node, k = stack[-1]
            if k < len(adj[node]):
                stack[-1] = (node, k + 1)
                nxt = adj[node][k]
                if color[nxt] == 1:
                    cyc = path[path.index(nxt):] + [nxt]
                    return [tasks[i] for i in cyc]
                if color[nxt] == 0:
                    color[nxt] = 1
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                color[node] = 2
                stack.pop()
                path.pop()
    return []


def longest_chain(tasks: Sequence[Hashable], depends_on: Mapping[Hashable, Iterable[Hashable]]) -> int:
    """The number of tasks on the longest dependency chain (Kahn levels); for tests and benchmarks."""
    index = {t: i for i, t in enumerate(tasks)}
    n = len(tasks)
    dependents: list[list[int]] = [[] for _ in range(n)]
    indeg = [0] * n
    for t, ds in depends_on.items():
        ti = index[t]
        for d in set(ds):
            dependents[index[d]].append(ti)
            indeg[ti] += 1
    level = [1] * n
    queue = [i for i in range(n) if indeg[i] == 0]
    seen = 0
    while queue:
        nxt = []
        for i in queue:
            seen += 1
            for s in dependents[i]:
                if level[s] < level[i] + 1:
                    level[s] = level[i] + 1
                indeg[s] -= 1
                if indeg[s] == 0:
                    nxt.append(s)
        queue = nxt
    if seen != n:
        raise CycleError(find_cycle(tasks, {t: list(ds) for t, ds in depends_on.items()}))
    return max(level, default=0)
