#!/usr/bin/env bash
# Measures peak memory (VmHWM) of a client and of each datanode while a
# large file is written and read back at replication 3, with the master
# and three datanodes as separate processes, as users run them.
# Usage: scripts/streaming-memory.sh [SIZE]   (default 10GiB; needs 3x SIZE of disk)
set -euo pipefail
size=${1:-10GiB}
source "$(dirname "$0")/cluster.sh"
start_cluster 3
bytes=$(numfmt --from=iec "${size%iB}")
hwm() { awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$1/status"; }
peak() { awk '/Maximum resident/ {printf "%.0f MiB", $NF/1024}' "$1"; }
start=$(date +%s.%N)
head -c "$bytes" /dev/zero | /usr/bin/time -v -o "$work/put.time" "$g" --master "$master" put - /big
put_s=$(echo "$(date +%s.%N) - $start" | bc)
start=$(date +%s.%N)
/usr/bin/time -v -o "$work/get.time" "$g" --master "$master" cat /big | cmp -n "$bytes" - /dev/zero
get_s=$(echo "$(date +%s.%N) - $start" | bc)
printf '%s at replication 3: put %.0f s, get %.0f s (read back byte-exact)\n' "$size" "$put_s" "$get_s"
printf 'peak RSS: client put %s, client get %s, master %s, datanodes %s / %s / %s\n' \
  "$(peak "$work/put.time")" "$(peak "$work/get.time")" "$(hwm $mpid)" "$(hwm "${pids[0]}")" "$(hwm "${pids[1]}")" "$(hwm "${pids[2]}")"
