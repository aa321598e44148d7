#!/usr/bin/env bash
# What the shared totals' writes cost under load, in the peer benchmark harness
# (LLM_ROUTER_PEER_BENCH names its folder): JSON chat completions at 1 and 64 connections,
# cache and dedup off (the harness's config), one router process pinned to CPU 0 (wrk, the
# nginx mock and a scratch redis-server started here share CPU 1). Variants, alternating in
# each pair (ROUNDS pairs), each in its own run_peer.sh run:
#   redis   state.redis_url on the scratch redis-server, as shipped
#   none    no Redis
#   gap250  Redis, a busy process writing its totals at most every 0.25 s (the gap before the
#           write-on-count; patched in the bench process only, see bench/llm-router-totals)
#   base    Redis, the code of the tree BASE_TREE (e.g. `git archive COMMIT | tar -x -C DIR`)
#           run with this checkout's environment: a build against another
# Redis is emptied before each run. Next to each run bench/totals_watch.py records Redis's
# side of every wrk run (commands called, Redis CPU, load average) and reads /stats after it.
# Prints req/s and CPU ms per request of each run, the medians and ratios against `none`
# (BASELINE=another variant: against that one),
# and totals writes (EVALSHA calls) per second and Redis CPU.
#   LLM_ROUTER_PEER_BENCH=../bench bench/totals_load.sh
#   ROUNDS=3 VARIANTS="redis none" WORKERS=2 CONNS=64 bench/totals_load.sh
# WORKERS=2 runs `--workers 2` on CPUs 0-1 (the second shares CPU 1 with the harness).
# QUIET_WAIT (default 20 s here) bounds the harness's wait for a quiet machine before each run.
set -euo pipefail
: "${LLM_ROUTER_PEER_BENCH:?set LLM_ROUTER_PEER_BENCH to the peer benchmark harness folder}"
peer=$(cd "$LLM_ROUTER_PEER_BENCH" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
pairs=${ROUNDS:-3}
variants=${VARIANTS:-"redis none gap250"}
workers=${WORKERS:-1}
conns=${CONNS:-"1 64"}
harness_cpus=${HARNESS_CPUS:-1}
out=${OUT_DIR:-/tmp/llm-router-totals-bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
taskset -c "$harness_cpus" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' \
  --appendonly no >"$out/redis.log" 2>&1 &
redis_pid=$!
watch_pid=
trap 'kill "$redis_pid" 2>/dev/null || true; [ -z "$watch_pid" ] || kill "$watch_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$redis_port" PING >/dev/null 2>&1 && break; sleep 0.1; done
cpus=0; ((workers == 1)) || cpus=0-$((workers - 1))

for ((pair = 1; pair <= pairs; pair++)); do
  for variant in $variants; do
    run=$out/pair$pair-$variant
    mkdir -p "$run"
    redis-cli -p "$redis_port" FLUSHALL >/dev/null
    url=redis://127.0.0.1:$redis_port/0 gap= tree=$here
    case $variant in
      redis) ;;
      none) url= ;;
      gap250) gap=0.25 ;;
      base) tree=${BASE_TREE:?BASE_TREE: an export of the build to compare with} ;;
      *) echo "unknown variant $variant" >&2; exit 2 ;;
    esac
    python3 "$here/bench/totals_watch.py" --run-dir "$run" --redis-port "$redis_port" \
      --redis-pid "$redis_pid" --out "$run/redis.jsonl" &
    watch_pid=$!
    echo "$(date -u +%H:%M:%S) pair $pair $variant (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    RUN_DIR=$run LLMR_BIN=$here/bench/llm-router-totals LLMR_REDIS_URL=$url LLMR_TOTALS_GAP=$gap LLMR_TREE=$tree \
      DEFAULT_PROXY_CPUS=$cpus LLMR_ARGS="--workers $workers" MODES=json CONNS=$conns ROUNDS=1 \
      QUIET_WAIT=${QUIET_WAIT:-20} "$peer/run_peer.sh" llm-router >"$run.log" 2>&1
    sleep 0.5
    kill "$watch_pid" 2>/dev/null || true
    wait "$watch_pid" 2>/dev/null || true
    watch_pid=
  done
done

python3 "$here/bench/totals_report.py" "$out" "${BASELINE:-none}"
