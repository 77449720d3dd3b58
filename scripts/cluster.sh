# Sourced by the measurement scripts: builds godfs into a temporary
# directory (removed on exit) and runs a master and datanodes as separate
# processes, as users run them.
#   start_cluster N "MASTER FLAGS" "DATANODE FLAGS"
# sets work (the directory), g (the binary), master (its address), mpid
# (the master's pid) and pids (the datanodes'), and returns once all N
# datanodes are live.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
go build -o "$work/godfs" "$root/cmd/godfs"
g="$work/godfs"

start_cluster() {
  local n=$1 mflags=${2:-} dflags=${3:-}
  master=127.0.0.1:$((20000 + RANDOM % 20000))
  # shellcheck disable=SC2086
  "$g" master --dir "$work/m" --listen "$master" $mflags >/dev/null 2>"$work/m.log" &
  mpid=$!
  sleep 0.5
  pids=()
  for i in $(seq "$n"); do
    # shellcheck disable=SC2086
    "$g" datanode --master "$master" --data "$work/d$i" --listen 127.0.0.1:0 $dflags >/dev/null 2>"$work/d$i.log" &
    pids+=($!)
  done
  until "$g" --master "$master" report 2>/dev/null | grep -q "^$n live"; do
    # A server that died (a port taken, say) would leave this waiting.
    for p in "$mpid" "${pids[@]}"; do
      if ! kill -0 "$p" 2>/dev/null; then
        echo "cluster.sh: a server exited while starting; its logs:" >&2
        tail -n 5 "$work"/*.log >&2
        exit 1
      fi
    done
    sleep 0.2
  done
}
