#!/usr/bin/env bash
# The tail at one connection, as shipped: the router (`llm-router`, no probe, access line on)
# on CPU 0, wrk sending the peer harness's pinned JSON chat completion (or its stream) over
# CONNS connections for SECONDS at full speed through the harness's nginx mock on CPU 1.
# Prints requests, p50, p99, p99.9 and max, and the router's CPU per request.
# ROUTED=1: what users run instead: `model: auto` with the cache and online learning on, a
# different question every request (bench/wrk/varied.lua; WRK_SAME=1: one question, so every
# request after the first is a cache hit). The mode is then json.
# LLM_ROUTER_PEER_BENCH names the peer benchmark harness folder (not part of this repository).
#   bench/tail.sh [seconds] [json|stream] [connections]
set -euo pipefail
: "${LLM_ROUTER_PEER_BENCH:?set LLM_ROUTER_PEER_BENCH to the peer benchmark harness folder}"
peer=$(cd "$LLM_ROUTER_PEER_BENCH" && pwd)
cd "$(dirname "$0")/.."
. bench/routed_models.sh
secs=${1:-60} mode=${2:-json} conns=${3:-1}
work=$(mktemp -d /tmp/llmr-tail.XXXX)
mock_port=${MOCK_PORT:-18183} router_port=${ROUTER_PORT:-4193} router=
python3 "$peer/mock/render_conf.py" "$mock_port" "$work/mock" >/dev/null
taskset -c 1 nginx -e "$work/mock/nginx-error.log" -p "$work/mock" -c "$work/mock/nginx.conf"
trap 'kill $router 2>/dev/null || true; kill "$(cat "$work/mock/nginx.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
if [ "${ROUTED:-0}" = 1 ]; then
  routed_config "http://127.0.0.1:$mock_port" "$work" > "$work/router.yaml"
  load=(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s bench/wrk/varied.lua)
else
  sed "s#@UPSTREAM@#http://127.0.0.1:$mock_port#g" "$peer/configs/llm-router.yaml" > "$work/router.yaml"
  if [ "$mode" = stream ]; then body=openai_chat_stream.json expect='data: [DONE]'
  else body=openai_chat.json expect='"finish_reason":"stop"'; fi
  load=(env WRK_BODY_FILE="$peer/requests/$body" WRK_EXPECT="$expect"
        taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s "$peer/wrk/post.lua")
fi
taskset -c 0 .venv/bin/llm-router --config "$work/router.yaml" --addr "127.0.0.1:$router_port" \
  > "$work/router.log" 2>&1 &
router=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$router_port/health" >/dev/null && break; sleep 0.1; done
ticks() { awk '{print $14 + $15}' "/proc/$router/stat"; }
before=$(ticks)
"${load[@]}" "http://127.0.0.1:$router_port/v1/chat/completions" > "$work/wrk.txt"
after=$(ticks)
python3 - "$work/wrk.txt" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
wrk = json.loads(next(l for l in open(sys.argv[1]) if l.startswith("WRKJSON "))[8:])
errors = sum(wrk.get(k, 0) for k in ("err_connect", "err_read", "err_write", "err_status",
                                     "err_timeout", "bad_status", "bad_body"))
cpu_ms = int(sys.argv[2]) / int(sys.argv[3]) * 1000 / max(wrk["requests"], 1)
print(f"{wrk['requests']} requests in {wrk['duration_s']:.0f} s ({wrk['rps']:.0f}/s, "
      f"{errors} errors): p50 {wrk['p50_us'] / 1000:.2f} ms  p99 {wrk['p99_us'] / 1000:.2f} ms  "
      f"p99.9 {wrk['p999_us'] / 1000:.2f} ms  max {wrk['lat_max_us'] / 1000:.1f} ms  "
      f"CPU {cpu_ms:.2f} ms/request")
PY
