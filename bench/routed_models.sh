# Sourced by the routed benchmarks: `routed_models UPSTREAM` prints the `models:` section of
# a router config with three tiers on the peer harness's nginx mock at UPSTREAM (the same
# models and prices in every routed measurement, so their figures compare); `routed_config
# UPSTREAM DIR` a whole config of what users run: those models, the cache and online learning
# on, dedup off, the stores in DIR.
routed_models() {
  cat <<YAML
models:
  - {name: bench-gpt, provider: openai, model: gpt-4o-mini, base_url: "$1/v1", api_key: sk-bench,
     cost_per_1k_in: 0.00015, cost_per_1k_out: 0.0006, tier: 1}
  - {name: bench-claude, provider: anthropic, model: claude-haiku-4-5, base_url: "$1", api_key: sk-bench,
     cost_per_1k_in: 0.0008, cost_per_1k_out: 0.004, tier: 2}
  - {name: bench-big, provider: openai, model: gpt-4o, base_url: "$1/v1", api_key: sk-bench,
     cost_per_1k_in: 0.0025, cost_per_1k_out: 0.01, tier: 3}
YAML
}

routed_config() {
  routed_models "$1"
  cat <<YAML
cache: {enabled: true}
dedup: {enabled: false}
learned: {model: builtin, feedback_db: $2/feedback.db, online: true}
state: {path: $2/state.db}
YAML
}
