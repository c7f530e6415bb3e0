"""The pure wave planner: property tests over random DAGs and file impacts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildctl.planning import CycleError, Impact, find_cycle, longest_chain, plan_waves

OPS = ["CREATE", "UPDATE", "DELETE", "READ"]
# Written out independently of the module under test: the pairs of operations on one path that conflict.
CONFLICTING = {frozenset(p) for p in [("CREATE", "CREATE"), ("CREATE", "DELETE"), ("UPDATE", "UPDATE"),
                                       ("UPDATE", "DELETE"), ("DELETE", "DELETE"), ("DELETE", "READ")]}


def conflicts(a: str, b: str, impacts: list[Impact], threshold: float) -> bool:
    for x in impacts:
        if x.task != a or x.confidence < threshold:
            continue
        for y in impacts:
            if y.task == b and y.path == x.path and y.confidence >= threshold and frozenset((x.op, y.op)) in CONFLICTING:
                return True
    return False


@st.composite
def problems(draw, max_tasks: int = 18, with_impacts: bool = True):
    n = draw(st.integers(1, max_tasks))
    # A DAG by construction over 0..n-1 (edges point to lower numbers) ...
    edges = draw(st.lists(st.tuples(st.integers(1, max_tasks), st.integers(0, max_tasks)), max_size=3 * n)) if n > 1 else []
    deps: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in edges:
        a = a % n
        if a:
            deps[a].add(b % a)
    # ... then a random file order, so a dependency may come later in the file than its dependent.
    order = draw(st.permutations(list(range(n))))
    names = {i: f"T-{i:03d}" for i in range(n)}
    tasks = [names[i] for i in order]
    depends_on = {names[i]: [names[d] for d in sorted(ds)] for i, ds in deps.items()}
    impacts: list[Impact] = []
    if with_impacts:
        raw = draw(st.lists(st.tuples(
            st.integers(0, n - 1), st.sampled_from(["a.py", "b.py", "c.py", "d/e.sql"]), st.sampled_from(OPS),
            st.sampled_from([0.3, 0.59, 0.6, 0.9, 1.0])), max_size=2 * n))
        # One (task, path, op) at most, as the schema's UNIQUE requires.
        seen = set()
        for i, path, op, conf in raw:
            if (i, path, op) not in seen:
                seen.add((i, path, op))
                impacts.append(Impact(names[i], path, op, conf))
    threshold = draw(st.sampled_from([0.6, 0.6, 0.5, 0.95]))
    return tasks, depends_on, impacts, threshold


@settings(max_examples=250, deadline=None)
@given(problems())
def test_every_rule_of_the_waves_holds(problem):
    tasks, depends_on, impacts, threshold = problem
    plan = plan_waves(tasks, depends_on, impacts, threshold)

    # Every task in exactly one wave, and no empty wave.
    placed = [t for w in plan.waves for t in w]
    assert sorted(placed) == sorted(tasks)
    assert all(plan.waves)
    wave = {t: i + 1 for i, w in enumerate(plan.waves) for t in w}
    assert wave == plan.wave_of
    position = {t: i for i, t in enumerate(tasks)}
    # Waves keep the file order inside them.
    for w in plan.waves:
        assert w == sorted(w, key=position.get)

    # A task sits after all its dependencies (so never beside one).
    for t, ds in depends_on.items():
        for d in ds:
            assert wave[d] < wave[t], (t, d)

    # No wave holds two conflicting tasks.
    for w in plan.waves:
        for i, a in enumerate(w):
            for b in w[i + 1:]:
                assert not conflicts(a, b, impacts, threshold) and not conflicts(b, a, impacts, threshold), (a, b)

    # The placement is exactly "the later task in the file moves": a task sits in the first wave at or after
    # its dependencies' where no conflicting task earlier in the file sits.
    for t in tasks:
        ready = 1 + max((wave[d] for d in depends_on.get(t, [])), default=0)
        blocked = {wave[o] for o in tasks
                   if position[o] < position[t] and (conflicts(o, t, impacts, threshold) or conflicts(t, o, impacts, threshold))}
        expected = ready
        while expected in blocked:
            expected += 1
        assert wave[t] == expected, (t, ready, blocked)

    # The conflicting pairs reported are exactly the conflicting pairs, earlier task first.
    found = {(c.first, c.second) for c in plan.conflicts}
    expected_pairs = {
        (a, b) for a in tasks for b in tasks
        if position[a] < position[b] and (conflicts(a, b, impacts, threshold) or conflicts(b, a, impacts, threshold))
    }
    assert found == expected_pairs
    for c in plan.conflicts:
        assert frozenset((c.first_op, c.second_op)) in CONFLICTING
        assert min(c.first_confidence, c.second_confidence) >= threshold


@settings(max_examples=100, deadline=None)
@given(problems(with_impacts=False))
def test_without_conflicts_the_wave_count_is_the_longest_chain(problem):
    tasks, depends_on, _impacts, threshold = problem
    plan = plan_waves(tasks, depends_on, [], threshold)
    assert len(plan.waves) == longest_chain(tasks, depends_on)
    assert plan.moved == []
    # ... and each task sits at its dependency level.
    for t in tasks:
        assert plan.wave_of[t] == 1 + max((plan.wave_of[d] for d in depends_on[t]), default=0)


@settings(max_examples=60, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_the_same_input_always_gives_the_same_waves(problem, rnd):
    tasks, depends_on, impacts, threshold = problem
    first = plan_waves(tasks, depends_on, impacts, threshold)
    # The order of the dependency and impact collections must not matter; only the file order does.
    shuffled_deps = {t: rnd.sample(ds, len(ds)) for t, ds in reversed(list(depends_on.items()))}
    shuffled_impacts = rnd.sample(impacts, len(impacts))
    second = plan_waves(list(tasks), shuffled_deps, shuffled_impacts, threshold)
    assert first.waves == second.waves
    assert first.conflicts == second.conflicts


@settings(max_examples=60, deadline=None)
@given(problems(with_impacts=False), st.data())
def test_a_cycle_is_refused_and_named(problem, data):
    tasks, depends_on, _impacts, _t = problem
    if len(tasks) < 2:
        return
    # Close a cycle: the root of a chain depends on its end.
    a, b = data.draw(st.sampled_from(tasks)), data.draw(st.sampled_from(tasks))
    if a == b:
        return
    deps = {t: list(ds) for t, ds in depends_on.items()}
    deps[a].append(b)
    deps[b].append(a)
    with pytest.raises(CycleError) as info:
        plan_waves(tasks, deps)
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1] and len(cycle) >= 3
    for x, y in zip(cycle, cycle[1:]):
        assert y in deps[x], (x, y, cycle)  # each arrow is a real "depends on"


def test_two_updates_of_one_file_share_a_wave_only_below_the_threshold():
    tasks = ["T-001", "T-002"]
    high = [Impact("T-001", "src/app.py", "UPDATE", 0.9), Impact("T-002", "src/app.py", "UPDATE", 0.9)]
    low = [Impact("T-001", "src/app.py", "UPDATE", 0.5), Impact("T-002", "src/app.py", "UPDATE", 0.5)]
    assert plan_waves(tasks, {}, high).waves == [["T-001"], ["T-002"]]
    assert plan_waves(tasks, {}, low).waves == [["T-001", "T-002"]]
    assert plan_waves(tasks, {}, low, threshold=0.5).waves == [["T-001"], ["T-002"]]


@pytest.mark.parametrize("op_a,op_b,conflict", [
    ("CREATE", "CREATE", True), ("CREATE", "DELETE", True), ("UPDATE", "UPDATE", True), ("UPDATE", "DELETE", True),
    ("DELETE", "DELETE", True), ("DELETE", "READ", True), ("READ", "DELETE", True), ("DELETE", "CREATE", True),
    ("CREATE", "UPDATE", False), ("CREATE", "READ", False), ("UPDATE", "READ", False), ("READ", "READ", False),
    ("UPDATE", "CREATE", False), ("READ", "UPDATE", False),
])
def test_the_conflict_matrix(op_a, op_b, conflict):
    imps = [Impact("A", "f", op_a, 0.9), Impact("B", "f", op_b, 0.9)]
    plan = plan_waves(["A", "B"], {}, imps)
    assert (len(plan.waves) == 2) is conflict
    assert bool(plan.conflicts) is conflict


def test_the_later_task_moves_and_its_dependents_with_it():
    # C conflicts with A (earlier in the file): C moves to wave 2, D (needs C) to wave 3; B is untouched.
    tasks = ["A", "B", "C", "D"]
    deps = {"D": ["C"]}
    imps = [Impact("A", "x", "UPDATE", 0.9), Impact("C", "x", "UPDATE", 0.9)]
    plan = plan_waves(tasks, deps, imps)
    assert plan.waves == [["A", "B"], ["C"], ["D"]]
    assert plan.moved == ["C"]
    # Same graph, file order reversed: now A is the later one and moves.
    plan = plan_waves(["C", "D", "A", "B"], deps, imps)
    assert plan.waves == [["C", "B"], ["D", "A"]]


def test_five_task_scenario_waves():
    tasks = ["T-001", "T-002", "T-003", "T-004", "T-005"]
    deps = {"T-003": ["T-001", "T-002"], "T-004": ["T-002"], "T-005": ["T-003", "T-004"]}
    assert plan_waves(tasks, deps).waves == [["T-001", "T-002"], ["T-003", "T-004"], ["T-005"]]


def test_unknown_tasks_and_self_dependency_are_refused():
    with pytest.raises(ValueError):
        plan_waves(["A"], {"A": ["B"]})
    with pytest.raises(CycleError) as info:
        plan_waves(["A"], {"A": ["A"]})
    assert info.value.cycle == ["A", "A"]
    assert find_cycle(["A", "B"], {"A": ["B"]}) == []


def test_ten_thousand_tasks_plan_completely():
    """Scale smoke test (the timing lives in benchmarks/bench_planning.py, never in tests)."""
    rng = random.Random(7)
    n = 10_000
    tasks = [f"T-{i:05d}" for i in range(n)]
    deps: dict[str, set[str]] = {t: set() for t in tasks}
    edges = 0
    while edges < 50_000:
        a = rng.randrange(1, n)
        b = rng.randrange(max(0, a - 400), a)
        if tasks[b] not in deps[tasks[a]]:
            deps[tasks[a]].add(tasks[b])
            edges += 1
    imps = [Impact(t, f"src/m{rng.randrange(2000)}.py", rng.choice(OPS), rng.random()) for t in tasks for _ in range(2)]
    plan = plan_waves(tasks, deps, imps)
    assert sum(len(w) for w in plan.waves) == n
    for t, ds in deps.items():
        for d in ds:
            assert plan.wave_of[d] < plan.wave_of[t]
