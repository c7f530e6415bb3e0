#!/bin/sh
# A build agent written in shell: it claims a run's tasks one at a time, runs each task's
# command, and reports how it went. Start it in several terminals (or on several
# machines sharing one PostgreSQL database) against the same run:
#
#     EX=$(buildctl run start examples/script-agent/tasks.toml)
#     sh examples/script-agent/agent.sh "$EX"        # terminal 1
#     sh examples/script-agent/agent.sh "$EX"        # terminal 2
#
# buildctl hands out each task once, under the wave barrier and max_parallel_agents; a
# failed task comes back after its backoff (1 s, 5 s, 15 s) until its retries run out; a
# copy that dies mid-task stops heartbeating, and once its lease (staleAfterMs) runs out
# the other copies take its task back.
set -u
EX=${1:?usage: agent.sh EXEC [DIR]}
cd "${2:-.}" || exit 2
# heartbeatIntervalMs is this script's own pace (below); staleAfterMs is the lease its
# peers grant it: a copy silent that long loses its task to them.
CONFIG=${AGENT_CONFIG:-'{"heartbeatIntervalMs": 2000, "staleAfterMs": 10000}'}

AG=$(buildctl agent spawn "$EX" --config "$CONFIG") || exit
trap 'buildctl agent finish "$AG" --status failed --error "stopped by a signal"; exit 130' INT TERM

while :; do
    task=$(buildctl agent claim "$AG" --wait 30s --json)
    case $? in
        0) ;;
        9) continue ;;              # nothing claimable yet (barrier, limit, backoff): ask again
        10) break ;;                # the run has nothing left for agents
        *) exit 1 ;;                # 5: the run was cancelled; anything else is an error
    esac
    cmd=$(printf '%s' "$task" | python3 -c 'import json, sys; print(json.load(sys.stdin)["command"])')
    # Heartbeat while the command runs; the loop ends by itself if the run is cancelled.
    ( while buildctl heartbeat "$AG"; do sleep 2; done ) &
    beat=$!
    sh -c "$cmd"
    rc=$?
    kill "$beat" 2>/dev/null
    if [ "$rc" -eq 0 ]; then
        buildctl agent done "$AG" --status completed || exit
    else
        buildctl agent done "$AG" --status failed --error "exit code $rc" || exit
    fi
done
buildctl agent finish "$AG" --status completed
