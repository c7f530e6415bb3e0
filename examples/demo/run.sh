#!/bin/sh
# The Quick start demo: a scratch git repository, the example task list run by three
# workers with git checkpoints on, the live view, then the wave summary.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=${DEMO_REPO:-$(mktemp -d "${TMPDIR:-/tmp}/buildctl-demo.XXXXXX")}
mkdir -p "$repo"
git -C "$repo" init -q
git -C "$repo" -c user.name=demo -c user.email=demo@example.invalid commit -q --allow-empty -m "empty start"
printf 'dist/\n' > "$repo/.gitignore"

buildctl migrate
exec_id=$(buildctl run start "$here/tasks.toml")
echo "execution $exec_id in $repo" >&2
status=0
buildctl run exec "$exec_id" --jobs 3 --repo "$repo" --checkpoints || status=$?
buildctl waves "$exec_id"
buildctl log tail "$exec_id" --errors
exit $status
