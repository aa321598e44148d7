#!/usr/bin/env bash
# CPU per request on the path users run, beside the pinned path the peer harness measures:
#   pinned   `model: bench-gpt`, cache off (the peer harness's cell)
#   stream   the same, streamed (44 events from the mock; the peer harness's stream cell)
#   miss     `model: auto`, cache on, a different question every time: scored by the trained
#            router, embedded, looked up, routed to a tier, stored
#   hit      `model: auto`, cache on, one question throughout: answered from the cache
#   real     as miss, but real questions (the QQP dev questions of $LLM_ROUTER_EVAL_DATA, each
#            once): unlike the template of miss, most come near no cached question
# Each shape gets a fresh router on CPU 0 (wrk and the nginx mock on CPU 1), 3 s of warm-up,
# then SECONDS of wrk at CONNS connections; CPU per request is the router's utime+stime over
# the measured run divided by its requests. PROFILE=miss,hit (or 1: miss) has py-spy sample
# those shapes too (PYSPY_RATE samples/s, 1000 unless set).
# LLM_ROUTER_PEER_BENCH names the peer benchmark harness folder (not part of this repository).
# SHAPES picks and orders them ("pinned miss hit" unless set); GATE=false turns the trained
# router's familiarity gate off (learned.gate); COMPARE=SHARE turns on the comparisons the router
# makes itself (learned.compare, bench-big as the judge: the mock's fixed answer is no verdict,
# so each comparison costs its two calls and is then dropped as unreadable). PARTS=1 serves
# bench/part_cpu.py instead of llm-router and prints, per shape, the CPU each part of a request
# took in the measured run (microseconds per request, calls per request, share of the CPU).
#   bench/routed_path.sh [seconds] [connections]
set -euo pipefail
: "${LLM_ROUTER_PEER_BENCH:?set LLM_ROUTER_PEER_BENCH to the peer benchmark harness folder}"
peer=$(cd "$LLM_ROUTER_PEER_BENCH" && pwd)
cd "$(dirname "$0")/.."
. bench/routed_models.sh
secs=${1:-10} conns=${2:-1}
work=$(mktemp -d /tmp/llmr-routed.XXXX)
mock_port=${MOCK_PORT:-18184} router_port=${ROUTER_PORT:-4194} router=
python3 "$peer/mock/render_conf.py" "$mock_port" "$work/mock" >/dev/null
taskset -c 1 nginx -e "$work/mock/nginx-error.log" -p "$work/mock" -c "$work/mock/nginx.conf"
trap 'kill $router 2>/dev/null || true; kill "$(cat "$work/mock/nginx.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
up=http://127.0.0.1:$mock_port

config() {  # $1: cache on/off, $2: the shape (the stream shape's model is the mock's SSE path)
  routed_models "$up"
  cat <<YAML
$([ "$2" != stream ] || echo "  - {name: bench-gpt-stream, provider: openai, model: gpt-4o-mini, \
base_url: \"$up/stream/v1\", api_key: sk-bench, cost_per_1k_in: 0.00015, cost_per_1k_out: 0.0006, tier: 3}")
cache: {enabled: $1}
dedup: {enabled: false}
learned: {model: builtin, feedback_db: $work/feedback.db, gate: ${GATE:-true}$([ -z "${COMPARE:-}" ] || echo ", compare: {share: $COMPARE, judge: bench-big, max_usd_per_hour: 1000}")}
state: {path: $work/state.db}
YAML
}

cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }  # user, system

run_shape() {  # $1 shape, $2 cache, $3 wrk script args...
  local shape=$1 cache=$2; shift 2
  config "$cache" "$shape" > "$work/$shape.yaml"
  local serve=(.venv/bin/llm-router)
  [ "${PARTS:-0}" = 0 ] || serve=(env PART_CPU_OUT="$work/parts-$shape.json" .venv/bin/python bench/part_cpu.py)
  taskset -c 0 "${serve[@]}" --config "$work/$shape.yaml" --addr "127.0.0.1:$router_port" \
    > "$work/$shape.log" 2>&1 &
  router=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$router_port/health" >/dev/null && break; sleep 0.1; done
  "$@" -d3s "http://127.0.0.1:$router_port/v1/chat/completions" > /dev/null
  [ "${PARTS:-0}" = 0 ] || kill -USR1 $router  # the warm-up's parts are not counted
  local before; before=$(cpu_ticks $router)
  if [[ ",${PROFILE:-}," == *",$shape,"* || ( "${PROFILE:-}" = 1 && "$shape" = miss ) ]]; then
    .venv/bin/py-spy record -p "$router" -d "$secs" -r "${PYSPY_RATE:-1000}" -f raw \
      -o "$work/profile-$shape.txt" >/dev/null 2>&1 &
  fi
  "$@" -d"${secs}s" "http://127.0.0.1:$router_port/v1/chat/completions" > "$work/$shape.wrk"
  local after; after=$(cpu_ticks $router)
  if [ "${PARTS:-0}" != 0 ]; then
    rm -f "$work/parts-$shape.json"; kill -USR1 $router
    for _ in $(seq 50); do [ -s "$work/parts-$shape.json" ] && break; sleep 0.1; done
  fi
  wait_spy=$(jobs -p | grep -v "^$router$" || true)
  [ -z "$wait_spy" ] || wait $wait_spy 2>/dev/null || true
  kill $router; wait $router 2>/dev/null || true
  router=
  .venv/bin/python - "$shape" "$work/$shape.wrk" $before $after "$(getconf CLK_TCK)" <<'PY'
import json, sys
shape, path = sys.argv[1], sys.argv[2]
user0, sys0, user1, sys1, hz = map(int, sys.argv[3:])
before, after = user0 + sys0, user1 + sys1
line = next(l for l in open(path) if l.startswith("WRKJSON "))
w = json.loads(line[8:])
bad = w.get("bad_status", 0) + w.get("bad_body", 0) + w.get("err_status", 0)
cpu_ms = (after - before) / hz * 1000 / max(w["requests"], 1)
print(f"{shape:7s} {w['requests']:6d} requests  {w['rps']:7.0f}/s  CPU {cpu_ms:5.2f} ms/request  "
      f"p50 {w['p50_us'] / 1000:6.2f} ms  p99 {w['p99_us'] / 1000:6.2f} ms  "
      f"max {w['lat_max_us'] / 1000:6.1f} ms  bad {bad}  "
      f"kernel {100 * (sys1 - sys0) / max(after - before, 1):.0f}% of CPU")
parts = path[: -len(".wrk")].rsplit("/", 1)[0] + f"/parts-{shape}.json"
try:
    spent = json.load(open(parts))
except FileNotFoundError:
    sys.exit()
n, total_us = max(w["requests"], 1), cpu_ms * 1000
print(f"  {'part':26s} {'us/request':>10s} {'calls/request':>14s} {'share':>6s}")
for part, t in sorted(spent.items(), key=lambda kv: -kv[1]["cpu_ns"]):
    if t["calls"]:
        us = t["cpu_ns"] / 1000 / n
        print(f"  {part:26s} {us:10.1f} {t['calls'] / n:14.2f} {us / total_us:6.1%}")
PY
}

wrk_peer=(env WRK_BODY_FILE="$peer/requests/openai_chat.json" WRK_EXPECT='"finish_reason":"stop"'
          taskset -c 1 wrk -t1 -c"$conns" -s "$peer/wrk/post.lua")
wrk_varied=(taskset -c 1 wrk -t1 -c"$conns" -s bench/wrk/varied.lua)
wrk_stream=(env WRK_BODY_FILE="$peer/requests/openai_chat_stream.json" WRK_EXPECT='data: [DONE]'
            taskset -c 1 wrk -t1 -c"$conns" -s "$peer/wrk/post.lua")
for shape in ${SHAPES:-pinned miss hit}; do
  case $shape in
    pinned) run_shape pinned false "${wrk_peer[@]}" ;;
    stream) run_shape stream false "${wrk_stream[@]}" ;;
    miss) run_shape miss true "${wrk_varied[@]}" ;;
    hit) run_shape hit true env WRK_SAME=1 "${wrk_varied[@]}" ;;
    real)
      : "${LLM_ROUTER_EVAL_DATA:?set LLM_ROUTER_EVAL_DATA for the real shape}"
      .venv/bin/python -c 'import json, sys
seen = set()
for line in open(sys.argv[1]):
    pair = json.loads(line)
    for q in (pair["a"], pair["b"]):
        if q not in seen:
            seen.add(q)
            print(json.dumps(" ".join(q.split()))[1:-1])' \
        "$LLM_ROUTER_EVAL_DATA/cache/qqp_pairs_dev.jsonl" > "$work/prompts.txt"
      run_shape real true env WRK_PROMPTS="$work/prompts.txt" "${wrk_varied[@]}" ;;
    *) echo "unknown shape $shape" >&2; exit 2 ;;
  esac
done
for profile in "$work"/profile-*.txt; do
  [ -f "$profile" ] || continue
  echo "=== $(basename "$profile" .txt)"
  .venv/bin/python bench/profile_report.py "$profile" 30
done
echo "(raw: $work)"
