#!/usr/bin/env bash
# Alternate two checkouts of the router through one benchmark command, PAIRS times (A, B, A,
# B, ...), so the machine's load falls on both alike; each run's output is tagged A or B.
# The command runs from this checkout (its bench scripts); PYTHONPATH picks the code served.
#   bench/ab.sh A_DIR B_DIR PAIRS COMMAND...
#   bench/ab.sh /path/to/main . 3 bench/routed_path.sh 8 1
set -euo pipefail
a=$(cd "$1" && pwd) b=$(cd "$2" && pwd) pairs=$3
shift 3
cd "$(dirname "$0")/.."
for i in $(seq "$pairs"); do
  for side in A B; do
    if [ $side = A ]; then tree=$a; else tree=$b; fi
    echo "# pair $i $side ($tree) $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"
    PYTHONPATH=$tree "$@" 2>&1 | sed "s/^/$side /"
  done
done
