#!/usr/bin/env bash
# Measures the time from kill -9 of a datanode to full re-replication of a
# 1 GiB file at replication 3 on a local 4-datanode cluster.
# Usage: scripts/rereplication-time.sh [SIZE] [DEAD_AFTER]
set -euo pipefail
size=${1:-1GiB}
dead=${2:-10s}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
go build -o "$work/godfs" "$root/cmd/godfs"
g="$work/godfs"
port=$((20000 + RANDOM % 20000))
master=127.0.0.1:$port
"$g" master --dir "$work/m" --listen "$master" --dead-after "$dead" >/dev/null 2>"$work/m.log" &
sleep 0.5
pids=()
for i in 1 2 3 4; do
  "$g" datanode --master "$master" --data "$work/d$i" --listen 127.0.0.1:0 --heartbeat 1s >/dev/null 2>"$work/d$i.log" &
  pids+=($!)
done
until "$g" --master "$master" report 2>/dev/null | grep -q "^4 live"; do sleep 0.2; done
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
