#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind in the router's server, whatever
# else the machine runs: each shape gets a router under callgrind with its parts wrapped in
# named C functions (bench/miss_instructions.py), the peer harness's nginx mock upstream as in
# bench/routed_path.sh, WARM requests with instrumentation off, then N requests one at a time
# with it on (`callgrind_control -i on/off`). Prints, per shape, the instructions per request
# of the whole process and of each part (inclusive of the parts it calls, less OVERHEAD, 2,800
# unless set, per call: the wrapper's own cost inside the part), from `callgrind_annotate
# --inclusive=yes --tree=calling`. PYTHONPATH picks the code served, as in bench/ab.sh.
#   pinned   `model: bench-gpt`, cache off (the peer harness's request)
#   real     `model: auto`, cache on: the QQP dev questions of $LLM_ROUTER_EVAL_DATA, each once
#            (the warm-up's questions fill the cache; the measured ones are new)
#   stream   the peer harness's 44-event stream (`model: bench-gpt-stream`, the mock's streaming
#            path, as bench/tail.sh's stream mode), cache off; each answer read to its `[DONE]`
#   bench/miss_instructions.sh [N] [WARM]       SHAPES="pinned real" unless set
# MARKS=0 runs the plain server (no wrappers: the whole-process figure without their cost).
set -euo pipefail
: "${LLM_ROUTER_PEER_BENCH:?set LLM_ROUTER_PEER_BENCH to the peer benchmark harness folder}"
: "${LLM_ROUTER_EVAL_DATA:?set LLM_ROUTER_EVAL_DATA: the real questions}"
peer=$(cd "$LLM_ROUTER_PEER_BENCH" && pwd)
cd "$(dirname "$0")/.."
. bench/routed_models.sh
n=${1:-300} warm=${2:-1500}
work=$(mktemp -d /tmp/llmr-instr.XXXX)
mock_port=${MOCK_PORT:-18185} router_port=${ROUTER_PORT:-4195} router=
python3 "$peer/mock/render_conf.py" "$mock_port" "$work/mock" >/dev/null
nginx -e "$work/mock/nginx-error.log" -p "$work/mock" -c "$work/mock/nginx.conf"
trap 'kill $router 2>/dev/null || true; kill "$(cat "$work/mock/nginx.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
up=http://127.0.0.1:$mock_port

for shape in ${SHAPES:-pinned real}; do
  case $shape in pinned|stream) cache=false ;; real) cache=true ;;
    *) echo "unknown shape: $shape" >&2; exit 2 ;; esac
  { routed_models "$up"
    if [ "$shape" = stream ]; then  # the mock streams on its /stream path
      cat <<YAML
  - {name: bench-gpt-stream, provider: openai, model: gpt-4o-mini, base_url: "$up/stream/v1",
     api_key: sk-bench, cost_per_1k_in: 0.00015, cost_per_1k_out: 0.0006, tier: 1}
YAML
    fi
    cat <<YAML
cache: {enabled: $cache}
dedup: {enabled: false}
learned: {model: builtin, feedback_db: $work/feedback-$shape.db, gate: true}
state: {path: $work/state-$shape.db}
YAML
  } > "$work/$shape.yaml"
  if [ "${MARKS:-1}" = 0 ]; then serve=(.venv/bin/llm-router); else serve=(.venv/bin/python bench/miss_instructions.py); fi
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.$shape" \
    "${serve[@]}" --config "$work/$shape.yaml" --addr "127.0.0.1:$router_port" \
    > "$work/$shape.log" 2>&1 &
  router=$!
  for _ in $(seq 600); do curl -sf "127.0.0.1:$router_port/health" >/dev/null && break; sleep 0.5; done
  .venv/bin/python - "$shape" "$router_port" "$warm" "$n" "$router" \
    "$peer/requests" "$LLM_ROUTER_EVAL_DATA/cache/qqp_pairs_dev.jsonl" <<'PY'
import http.client, json, subprocess, sys
shape, port, warm, n, pid, requests, qqp = sys.argv[1:]
port, warm, n = int(port), int(warm), int(n)
if shape in ("pinned", "stream"):
    name = "openai_chat_stream.json" if shape == "stream" else "openai_chat.json"
    body = open(f"{requests}/{name}", "rb").read()
    bodies = [body] * (warm + n)
else:
    seen = {}
    for line in open(qqp, encoding="utf-8"):
        pair = json.loads(line)
        for q in (pair["a"], pair["b"]):
            seen.setdefault(" ".join(q.split()), None)
    questions = list(seen)[: warm + n]
    bodies = [json.dumps({"model": "auto", "max_tokens": 128, "messages": [
        {"role": "user", "content": q}]}).encode() for q in questions]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
def send(body):
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    reply = conn.getresponse()
    data = reply.read()
    assert reply.status == 200, (reply.status, data[:300])
    assert shape != "stream" or data.endswith(b"data: [DONE]\n\n"), data[-300:]
for body in bodies[:warm]:
    send(body)
subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
for body in bodies[warm:]:
    send(body)
subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
PY
  kill -INT $router; wait $router 2>/dev/null || true
  router=
  .venv/bin/python - "$shape" "$n" "$work/callgrind.$shape" "${OVERHEAD:-2800}" <<'PY'
import re, subprocess, sys
shape, n, path, overhead = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--tree=calling", "--threshold=100",
                      path], capture_output=True, text=True, check=True).stdout
total = int(re.search(r"^([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", out, re.M).group(1).replace(",", ""))
num = lambda s: int(s.replace(",", ""))
inclusive = {m[2]: num(m[1]) for m in re.finditer(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\*\s+\S*:part_(\w+)",
                                                    out, re.M)}
calls: dict[str, int] = {}
for m in re.finditer(r"^\s*[\d,]+ \(\s*[\d.]+%\)\s+>\s+\S*:part_(\w+) \(([\d,]+)x\)", out, re.M):
    calls[m[1]] = calls.get(m[1], 0) + num(m[2])
print(f"== {shape}: {total / n:,.0f} instructions per request (N={n}; wrappers included)")
print(f"   {'part':26s} {'per request':>12s} {'calls/request':>14s}  (less {overhead:,} per call: the wrapper)")
for part, count in inclusive.items():
    c = calls.get(part, 0)
    print(f"   {part:26s} {(count - c * overhead) / n:>12,.0f} {c / n:>14.2f}")
PY
done
echo "(raw: $work)"
