"""One claimer process, for the 64-claimer test (tests/test_farm.py) and benchmark
(benchmarks/bench_postgres.py): what `agent spawn`, then `agent claim --wait` / run the
command / `agent done` in a loop, then `agent finish` do, in one process (a process start
per call would cost 64 claimers ~300 interpreter starts on a 2-core machine).

    python tests/claimer.py LOCATION EXECUTION_ID STALE_AFTER_S

It registers its agent, then waits for its stdin to close, so that every claimer starts
together.
"""

import math
import subprocess
import sys

from buildctl import agents, storage
from buildctl.errors import NothingLeft

location, execution_id, stale_after_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
db = storage.connect(location)
agent = agents.spawn(db, execution_id)
sys.stdin.read()
while True:
    try:
        claim = agents.claim_waiting(db, lambda: agents.claim(db, agent, unless_busy=True), execution_id=execution_id,
                                     wait_s=math.inf, stale_after_s=stale_after_s, agent_id=agent)
    except NothingLeft:
        break
    code = subprocess.run(["sh", "-c", claim["command"]]).returncode
    agents.done(db, agent, "completed" if code == 0 else "failed", error=f"exit code {code}")
agents.finish(db, agent, "completed")
