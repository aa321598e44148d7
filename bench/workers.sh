#!/usr/bin/env bash
# `llm-router --workers 2` against `--workers 1` in the peer benchmark harness
# (LLM_ROUTER_PEER_BENCH names its folder): JSON chat completions at 64 connections, cache and
# dedup off (the harness's config), both shapes with `state.redis_url` on a scratch
# redis-server started here. One worker is pinned to CPU 0 and two to CPUs 0-1, as the
# harness does for LiteLLM's 1 and 2 workers (wrk and the nginx mock stay on CPU 1). Shapes
# alternate 1, 2, 1, 2, ... (ROUNDS pairs), each in its own run_peer.sh run; prints each
# run's requests/s and the 2w/1w ratio of each pair.
#   LLM_ROUTER_PEER_BENCH=../bench bench/workers.sh
#   ROUNDS=3 DURATION=10 LLMR_PYTHON=/path/to/python bench/workers.sh
set -euo pipefail
: "${LLM_ROUTER_PEER_BENCH:?set LLM_ROUTER_PEER_BENCH to the peer benchmark harness folder}"
peer=$(cd "$LLM_ROUTER_PEER_BENCH" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
pairs=${ROUNDS:-3}
out=${OUT_DIR:-/tmp/llm-router-workers-bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  >"$out/redis.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true' EXIT
export LLMR_REDIS_URL=redis://127.0.0.1:$redis_port/0
export LLMR_BIN=$here/bench/llm-router-redis

for ((pair = 1; pair <= pairs; pair++)); do
  for workers in 1 2; do
    cpus=0; ((workers == 1)) || cpus=0-$((workers - 1))
    RUN_DIR=$out/pair$pair-w$workers DEFAULT_PROXY_CPUS=$cpus LLMR_ARGS="--workers $workers" \
      MODES=json CONNS=64 ROUNDS=1 "$peer/run_peer.sh" llm-router >"$out/pair$pair-w$workers.log" 2>&1
  done
done

python3 - "$out" "$pairs" <<'EOF'
import json, pathlib, sys
out, pairs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def rps(run: str) -> float:
    rows = [json.loads(line) for line in (out / run / "results.jsonl").read_text().splitlines()]
    [row] = [r for r in rows if r["target"] == "llm-router"]
    wrk = row["wrk"]
    bad = sum(wrk[k] for k in ("err_connect", "err_read", "err_write", "err_status",
                               "err_timeout", "bad_status", "bad_body"))
    note = f" ({bad} errors)" if bad else ""
    note += f" (foreign CPU {row['foreign_cpu_s']:.1f} s)" if row["foreign_cpu_s"] > 0.5 else ""
    notes[run] = note
    return float(wrk["rps"])
notes: dict[str, str] = {}
ratios = []
for pair in range(1, pairs + 1):
    one, two = rps(f"pair{pair}-w1"), rps(f"pair{pair}-w2")
    ratios.append(two / one)
    print(f"pair {pair}: --workers 1 {one:6.0f} req/s{notes[f'pair{pair}-w1']}   "
          f"--workers 2 {two:6.0f} req/s{notes[f'pair{pair}-w2']}   ratio {two / one:.2f}")
ratios.sort()
print(f"median ratio {ratios[len(ratios) // 2]:.2f} (runs in {out})")
EOF
