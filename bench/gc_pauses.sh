#!/usr/bin/env bash
# Garbage-collection pauses under sequential load: the router runs under bench/gc_probe.py
# (every collection timed) on CPU 0, wrk sends JSON chat completions over one connection
# through the peer harness's nginx mock (CPU 1) for SECONDS, then the router is stopped and
# the latency percentiles are printed beside the collections of each generation.
# LLM_ROUTER_PEER_BENCH names the peer benchmark harness folder (not part of this repository).
# ROUTED=1: the path users run instead: `model: auto`, cache and online learning on, a
# different question every request (bench/wrk/varied.lua): every request is scored, embedded,
# looked up, stored in the cache and remembered for feedback.
#   bench/gc_pauses.sh [seconds] [connections] [extra gc_probe args, e.g. --saveall, --census]
set -euo pipefail
: "${LLM_ROUTER_PEER_BENCH:?set LLM_ROUTER_PEER_BENCH to the peer benchmark harness folder}"
peer=$(cd "$LLM_ROUTER_PEER_BENCH" && pwd)
cd "$(dirname "$0")/.."
. bench/routed_models.sh
secs=${1:-60} conns=${2:-1}
shift $(($# < 2 ? $# : 2))
work=$(mktemp -d /tmp/llmr-gc.XXXX)
mock_port=18182 router_port=4192
python3 "$peer/mock/render_conf.py" "$mock_port" "$work/mock" >/dev/null
taskset -c 1 nginx -e "$work/mock/nginx-error.log" -p "$work/mock" -c "$work/mock/nginx.conf"
if [ "${ROUTED:-0}" = 1 ]; then
  routed_config "http://127.0.0.1:$mock_port" "$work" > "$work/router.yaml"
  load=(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s bench/wrk/varied.lua)
else
  sed "s#@UPSTREAM@#http://127.0.0.1:$mock_port#g" "$peer/configs/llm-router.yaml" > "$work/router.yaml"
  load=(env WRK_BODY_FILE="$peer/requests/openai_chat.json" WRK_EXPECT='"finish_reason":"stop"'
        taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s "$peer/wrk/post.lua")
fi
taskset -c 0 .venv/bin/python bench/gc_probe.py "$work/gc.json" "$@" -- \
  --config "$work/router.yaml" --addr "127.0.0.1:$router_port" > "$work/router.log" 2>&1 &
router=$!
trap 'kill $router 2>/dev/null || true; kill "$(cat "$work/mock/nginx.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$router_port/health" >/dev/null && break; sleep 0.1; done
"${load[@]}" "http://127.0.0.1:$router_port/v1/chat/completions" > "$work/wrk.txt"
kill -TERM $router
wait $router || true
.venv/bin/python - "$work" <<'PY'
import json, pathlib, statistics, sys
work = pathlib.Path(sys.argv[1])
wrk = json.loads(next(l for l in (work / "wrk.txt").read_text().splitlines()
                      if l.startswith("WRKJSON "))[8:])
gc = json.loads((work / "gc.json").read_text())
errors = sum(wrk.get(k, 0) for k in ("err_connect", "err_read", "err_write", "err_status",
                              "err_timeout", "bad_status", "bad_body"))
print(f"{wrk['requests']} requests in {wrk['duration_s']:.0f} s ({wrk['rps']:.0f}/s, "
      f"{errors} errors): p50 {wrk['p50_us'] / 1000:.2f} ms  p99 {wrk['p99_us'] / 1000:.2f} ms  "
      f"p99.9 {wrk['p999_us'] / 1000:.2f} ms  max {wrk['lat_max_us'] / 1000:.1f} ms")
for generation in (0, 1, 2):
    rows = [c for c in gc["collections"] if c["generation"] == generation and c["serving"]]
    if not rows:
        print(f"generation {generation}: none while serving")
        continue
    ms = sorted(c["ms"] for c in rows)
    cpu = sorted(c["cpu_ms"] for c in rows)
    freed = sum(c["collected"] for c in rows)
    print(f"generation {generation}: {len(rows)} collections while serving, wall p50 {statistics.median(ms):.2f} "
          f"max {ms[-1]:.2f} ms, CPU p50 {statistics.median(cpu):.2f} max {cpu[-1]:.2f} ms, "
          f"{freed} freed ({freed / max(wrk['requests'], 1):.2f} per request)")
print(f"frozen at start: {gc['freeze_count']} objects; tracked at exit by generation: "
      f"{gc['tracked']}; commonest in generation 2:")
for name, count in gc["oldest_types"][:12]:
    print(f"  {count:7d} {name}")
for name, count in gc.get("garbage_types", [])[:25]:
    print(f"  {count:7d} {name}")
print(f"(raw: {work})")
PY
