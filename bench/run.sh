#!/usr/bin/env bash
# llm-router next to LiteLLM and a direct call, in the peer benchmark harness (not part of this
# repository; LLM_ROUTER_PEER_BENCH names its folder): same nginx mock upstream, same wrk load,
# same run. Extra arguments go to run_peer.sh, e.g.
#   bench/run.sh                                   # litellm-1w and llm-router, 2 rounds (~10 min)
#   DURATION=2 WARMUP=1 ROUNDS=1 bench/run.sh llm-router     # smoke test
#   bench/run.sh litellm-1w llm-router --out /tmp/peer.md
set -euo pipefail
: "${LLM_ROUTER_PEER_BENCH:?set LLM_ROUTER_PEER_BENCH to the peer benchmark harness folder}"
peer=$(cd "$LLM_ROUTER_PEER_BENCH" && pwd)  # before the cd below: it may be a relative path
cd "$(dirname "$0")/.."
[ -x .venv/bin/llm-router ] || { python3.11 -m venv .venv && .venv/bin/pip install -q -e .; }
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null \
   || [ ! -x "${VENV_ROOT:-/tmp/llm-bench}/venv-litellm/bin/litellm" ]; then
  "$peer/setup.sh"
fi
if [ $# -eq 0 ]; then set -- litellm-1w llm-router; fi
exec "$peer/run_peer.sh" "$@"
