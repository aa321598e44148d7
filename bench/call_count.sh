#!/usr/bin/env bash
# Python function calls per request: a measure of the router's work that the machine's load
# does not move (CPU time per request does, by 10-30% on a shared machine). The router runs
# under cProfile, wrk sends the peer harness's pinned JSON (or stream) request through the
# nginx mock for SHORT and then LONG seconds (two fresh routers), and calls per request is the
# difference in total calls over the difference in requests (start-up and shutdown cancel).
# Run it for two checkouts with bench/ab.sh (PYTHONPATH picks the code).
# LLM_ROUTER_PEER_BENCH names the peer benchmark harness folder (not part of this repository).
#   bench/call_count.sh [json|stream] [connections]
set -euo pipefail
: "${LLM_ROUTER_PEER_BENCH:?set LLM_ROUTER_PEER_BENCH to the peer benchmark harness folder}"
peer=$(cd "$LLM_ROUTER_PEER_BENCH" && pwd)
cd "$(dirname "$0")/.."
mode=${1:-json} conns=${2:-1}
work=$(mktemp -d /tmp/llmr-calls.XXXX)
mock_port=${MOCK_PORT:-18185} router_port=${ROUTER_PORT:-4195} router=
python3 "$peer/mock/render_conf.py" "$mock_port" "$work/mock" >/dev/null
taskset -c 1 nginx -e "$work/mock/nginx-error.log" -p "$work/mock" -c "$work/mock/nginx.conf"
trap 'kill $router 2>/dev/null || true; kill "$(cat "$work/mock/nginx.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
sed "s#@UPSTREAM@#http://127.0.0.1:$mock_port#g" "$peer/configs/llm-router.yaml" > "$work/router.yaml"
if [ "$mode" = stream ]; then body=openai_chat_stream.json expect='data: [DONE]'
else body=openai_chat.json expect='"finish_reason":"stop"'; fi

run() {  # $1: seconds of load; prints "requests calls"
  # From the scratch folder: `-m cProfile` puts the working folder first on sys.path, and
  # PYTHONPATH (bench/ab.sh) must pick the code.
  (cd "$work" && exec "$OLDPWD/.venv/bin/python" -m cProfile -o "calls-$1.prof" \
    "$OLDPWD/.venv/bin/llm-router" --config router.yaml --addr "127.0.0.1:$router_port" \
    > "router-$1.log" 2>&1) &
  router=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$router_port/health" >/dev/null && break; sleep 0.1; done
  WRK_BODY_FILE="$peer/requests/$body" WRK_EXPECT="$expect" taskset -c 1 \
    wrk -t1 -c"$conns" -d"$1s" -s "$peer/wrk/post.lua" \
    "http://127.0.0.1:$router_port/v1/chat/completions" > "$work/wrk-$1.txt"
  kill -INT $router; wait $router 2>/dev/null || true
  router=
  .venv/bin/python - "$work/wrk-$1.txt" "$work/calls-$1.prof" <<'PY'
import json, pstats, sys
w = json.loads(next(l for l in open(sys.argv[1]) if l.startswith("WRKJSON "))[8:])
print(w["requests"] + 1, pstats.Stats(sys.argv[2]).total_calls)  # + the health check
PY
}

short=$(run "${SHORT:-2}") long=$(run "${LONG:-6}")
python3 - "$mode" "$conns" $short $long <<'PY'
import sys
mode, conns, n1, c1, n2, c2 = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
print(f"{mode} c={conns}: {(c2 - c1) / (n2 - n1):.0f} Python calls per request "
      f"({n1} and {n2} requests)")
PY
