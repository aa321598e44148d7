#!/usr/bin/env bash
# Where the router's CPU goes under load: py-spy samples the router while wrk drives it
# through the peer harness's nginx mock. Prints the top self and inclusive frames.
# LLM_ROUTER_PEER_BENCH names the peer benchmark harness folder (not part of this repository).
#   bench/profile.sh [json|stream] [connections] [seconds]
set -euo pipefail
: "${LLM_ROUTER_PEER_BENCH:?set LLM_ROUTER_PEER_BENCH to the peer benchmark harness folder}"
peer=$(cd "$LLM_ROUTER_PEER_BENCH" && pwd)  # before the cd below: it may be a relative path
cd "$(dirname "$0")/.."
mode=${1:-json} conns=${2:-64} secs=${3:-10}
work=$(mktemp -d /tmp/llmr-profile.XXXX)
mock_port=${MOCK_PORT:-18181} router_port=${ROUTER_PORT:-4191}
python3 "$peer/mock/render_conf.py" "$mock_port" "$work/mock" >/dev/null
taskset -c 1 nginx -e "$work/mock/nginx-error.log" -p "$work/mock" -c "$work/mock/nginx.conf"
sed "s#@UPSTREAM@#http://127.0.0.1:$mock_port#g" "$peer/configs/llm-router.yaml" > "$work/router.yaml"
taskset -c 0 .venv/bin/llm-router --config "$work/router.yaml" --addr "127.0.0.1:$router_port" \
  > "$work/router.log" 2>&1 &
router=$!
trap 'kill $router 2>/dev/null || true; kill "$(cat "$work/mock/nginx.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "127.0.0.1:$router_port/health" >/dev/null && break; sleep 0.1; done
if [ "$mode" = stream ]; then body=openai_chat_stream.json expect='data: [DONE]'
else body=openai_chat.json expect='"finish_reason":"stop"'; fi
.venv/bin/py-spy record -p "$router" -d "$secs" -r "${PYSPY_RATE:-1000}" -f raw -o "$work/profile.txt" >/dev/null 2>&1 &
spy=$!
sleep 0.5
WRK_BODY_FILE="$peer/requests/$body" WRK_EXPECT="$expect" taskset -c 1 \
  wrk -t1 -c"$conns" -d"$((secs - 1))s" -s "$peer/wrk/post.lua" \
  "http://127.0.0.1:$router_port/v1/chat/completions" | grep -E "Requests/sec|Latency"
wait $spy || true
.venv/bin/python bench/profile_report.py "$work/profile.txt"
echo "raw profile: $work/profile.txt"
