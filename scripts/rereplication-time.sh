#!/usr/bin/env bash
# Measures the time from kill -9 of a datanode to full re-replication of a
# 1 GiB file at replication 3 on a local 4-datanode cluster.
# Usage: scripts/rereplication-time.sh [SIZE] [DEAD_AFTER]
set -euo pipefail
size=${1:-1GiB}
dead=${2:-10s}
source "$(dirname "$0")/cluster.sh"
start_cluster 4 "--dead-after $dead" "--heartbeat 1s"
head -c "$(numfmt --from=iec "${size%iB}")" /dev/urandom > "$work/src"
"$g" --master "$master" put "$work/src" /f
"$g" --master "$master" fsck / | head -1
start=$(date +%s.%N)
kill -9 "${pids[0]}" 2>/dev/null; wait "${pids[0]}" 2>/dev/null || true
# The master notices (dead-after), then copies what the node held.
while "$g" --master "$master" fsck / >/dev/null 2>&1; do sleep 0.2; done
dead_at=$(date +%s.%N)
until "$g" --master "$master" fsck / >/dev/null 2>&1; do sleep 0.2; done
end=$(date +%s.%N)
# Read it back with two of the original datanodes gone.
kill -9 "${pids[1]}" 2>/dev/null; wait "${pids[1]}" 2>/dev/null || true
"$g" --master "$master" get /f "$work/back"
cmp "$work/src" "$work/back"
printf 'kill -9 to full replication of %s (dead-after %s): %.1f s (declared dead after %.1f s, copies took %.1f s); read back byte-exact with 2 original nodes gone\n' \
  "$size" "$dead" "$(echo "$end - $start" | bc)" "$(echo "$dead_at - $start" | bc)" "$(echo "$end - $dead_at" | bc)"
