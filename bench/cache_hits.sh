#!/usr/bin/env bash
# Cache hits through the full HTTP path: the router (cache on) in front of the peer harness's
# nginx mock, wrk sending one request over and over, so every request after the first is an
# exact cache hit; then the same load with `Cache-Control: no-store` (every request goes
# upstream; dedup off so each is its own call) as the baseline of the same run.
# LLM_ROUTER_PEER_BENCH names the peer benchmark harness folder (not part of this repository).
#   bench/cache_hits.sh [seconds]
set -euo pipefail
: "${LLM_ROUTER_PEER_BENCH:?set LLM_ROUTER_PEER_BENCH to the peer benchmark harness folder}"
peer=$(cd "$LLM_ROUTER_PEER_BENCH" && pwd)  # before the cd below: it may be a relative path
cd "$(dirname "$0")/.."
secs=${1:-10}
work=$(mktemp -d /tmp/llmr-cache.XXXX)
mock_port=18182 router_port=4192
python3 "$peer/mock/render_conf.py" "$mock_port" "$work/mock" >/dev/null
taskset -c 1 nginx -e "$work/mock/nginx-error.log" -p "$work/mock" -c "$work/mock/nginx.conf"
{ sed -e "s#@UPSTREAM@#http://127.0.0.1:$mock_port#g" -e '/^cache:/,$d' "$peer/configs/llm-router.yaml"
  printf 'cache:\n  enabled: true\n  max_size: 1000\ndedup:\n  enabled: false\n'; } > "$work/router.yaml"
taskset -c 0 .venv/bin/llm-router --config "$work/router.yaml" --addr "127.0.0.1:$router_port" \
  > "$work/router.log" 2>&1 &
router=$!
trap 'kill $router 2>/dev/null; nginx -p "$work/mock" -c "$work/mock/nginx.conf" -s stop 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$router_port/health" >/dev/null && break; sleep 0.1; done
cat > "$work/nostore.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Cache-Control"] = "no-store"
local f = io.open(os.getenv("WRK_BODY_FILE"), "rb"); wrk.body = f:read("*a"); f:close()
LUA
body="$peer/requests/openai_chat.json"
for c in 1 16 64; do
  for mode in hit no-store; do
    if [ $mode = hit ]; then script="$peer/wrk/post.lua"; else script="$work/nostore.lua"; fi
    r=$(WRK_BODY_FILE=$body WRK_EXPECT='"finish_reason":"stop"' taskset -c 1 \
        wrk -t1 -c$c -d${secs}s -s "$script" "http://127.0.0.1:$router_port/v1/chat/completions" \
        | awk '/Requests\/sec/ {print $2} /^    Latency/ {print $2}' | tr '\n' ' ')
    echo "c=$c $mode: latency-avg req/s = $r"
  done
done
curl -s "127.0.0.1:$router_port/stats"; echo
