"""The configuration file (``engine.core.config``): the documented format, defaults, ``$VAR``
expansion,
strict validation that reports every problem with its key path, and the one lenient case: a
provider key whose variable is unset loads, and the router starts and explains itself.
"""

from __future__ import annotations

import string
from pathlib import Path

import anthropic
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from support_routing import model_entry, open_router_client

from engine.core.config import (
    MAX_CONFIG_BYTES,
    Config,
    Timeouts,
    expand_vars,
    load_config,
    parse_config,
)
from engine.core.pool import BackendPool
from engine.errors import ConfigInvalid
from engine.testing.fake_upstream import FakeUpstream

# the documented example, verbatim (comments included).
SPEC_EXAMPLE = """\
models:
  - name: claude-haiku                 # the name clients and stats see
    provider: anthropic                # anthropic | openai (any OpenAI-compatible server) | ollama
    model: claude-haiku-4-5-20251001   # the provider's model id
    base_url: https://api.anthropic.com
    api_key: $ANTHROPIC_API_KEY        # $VAR and ${VAR} are expanded from the environment
    cost_per_1k_in: 0.0008             # USD per 1,000 input tokens
    cost_per_1k_out: 0.004             # USD per 1,000 output tokens
    max_tokens: 200000                 # context window
    tier: 1                            # 1 = cheapest; higher = more capable
  - name: claude-sonnet
    provider: anthropic
    model: claude-sonnet-4-6
    base_url: https://api.anthropic.com
    api_key: $ANTHROPIC_API_KEY
    cost_per_1k_in: 0.003
    cost_per_1k_out: 0.015
    max_tokens: 200000
    tier: 2
  - name: claude-opus
    provider: anthropic
    model: claude-opus-4-6
    base_url: https://api.anthropic.com
    api_key: $ANTHROPIC_API_KEY
    cost_per_1k_in: 0.015
    cost_per_1k_out: 0.075
    max_tokens: 200000
    tier: 3
  # A local model, free:
  # - {name: llama-local, provider: ollama, model: llama3.2, base_url: http://localhost:11434,
  #    cost_per_1k_in: 0, cost_per_1k_out: 0, tier: 1}

classifier:
  tier1_max: 30      # score 0-30  -> tier 1
  tier2_max: 70      # score 31-70 -> tier 2; 71+ -> tier 3

cache:
  enabled: true
  max_size: 1000           # entries
  ttl_sec: 300
  similarity_thresh: 0.85  # 0-1, higher = stricter

learned:
  threshold: 0.5
  # sidecar_url: http://localhost:6060/classify   # optional external classifier (RouteLLM-style)
  # sidecar_weight: 0.7                           # 70% classifier, 30% heuristic

server:
  read_timeout_sec: 30
  write_timeout_sec: 120
"""

MINIMAL = "models:\n  - {name: m, provider: openai, model: gpt-4o-mini}\n"


def problems_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigInvalid) as caught:
        parse_config(text, environ=environ or {})
    assert str(caught.value).startswith("invalid configuration:")
    return caught.value.problems


# ---- the documented example and defaults -------------------------------------------------------


def test_spec_example_parses() -> None:
    config = parse_config(SPEC_EXAMPLE, environ={"ANTHROPIC_API_KEY": "sk-ant-test"})

    assert [m.name for m in config.models] == ["claude-haiku", "claude-sonnet", "claude-opus"]
    assert [m.tier for m in config.models] == [1, 2, 3]
    assert config.tiers == [1, 2, 3]
    haiku = config.models[0]
    assert haiku.provider == "anthropic"
    assert haiku.model == "claude-haiku-4-5-20251001"
    assert haiku.url == "https://api.anthropic.com"
    assert haiku.api_key == "sk-ant-test"
    assert haiku.missing_env is None
    assert (haiku.cost_per_1k_in, haiku.cost_per_1k_out) == (0.0008, 0.004)
    assert haiku.max_tokens == 200000
    assert (config.models[2].cost_per_1k_in, config.models[2].cost_per_1k_out) == (0.015, 0.075)
    assert (config.classifier.tier1_max, config.classifier.tier2_max) == (30, 70)
    assert config.cache.enabled is True
    assert (config.cache.max_size, config.cache.ttl_sec) == (1000, 300)
    assert config.cache.similarity_thresh == 0.85
    assert config.learned.threshold == 0.5
    assert config.learned.sidecar_url is None
    assert (config.server.read_timeout_sec, config.server.write_timeout_sec) == (30, 120)


def test_spec_example_without_its_key_still_loads() -> None:
    config = parse_config(SPEC_EXAMPLE, environ={})

    assert all(m.api_key is None for m in config.models)
    assert all(m.missing_env == "ANTHROPIC_API_KEY" for m in config.models)


def test_repository_config_files_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("config.yaml", "config.local.yaml", "config.demo.yaml"):
        config = load_config(root / name, environ={})
        assert config.tiers == [1, 2, 3], name


def test_defaults_for_every_optional_section() -> None:
    config = parse_config(MINIMAL, environ={})

    assert config.classifier.tier1_max == 30
    assert config.classifier.tier2_max == 70
    assert config.cache.enabled is True
    assert config.cache.max_size == 1000
    assert config.cache.ttl_sec == 300
    assert config.cache.similarity_thresh == 0.85
    # A file that names no trained router scores by the contract's heuristic alone; the
    # shipped config.yaml names the built-in one.
    assert (config.learned.model, config.learned.model_weight) == (None, 0.7)
    assert (config.learned.model_threshold, config.learned.threshold) == (None, 0.5)
    assert config.learned.sidecar_url is None
    assert config.learned.sidecar_weight == 0.7
    shipped = load_config(Path(__file__).parents[2] / "config.yaml", environ={})
    assert shipped.learned.model == "builtin"
    assert config.server.read_timeout_sec == 30
    assert config.server.write_timeout_sec is None
    assert config.server.keep_alive_sec == 15
    assert config.server.max_body_bytes == 4 * 1024 * 1024
    assert config.server.stream_write_timeout_sec == 60
    assert config.server.stream_buffer_bytes == 1024 * 1024
    assert config.server.api_keys == ()
    assert config.server.access_log is True
    assert config.server.log_prompts is False


def test_model_defaults() -> None:
    (model,) = parse_config(MINIMAL, environ={}).models

    assert model.tier == 1
    assert (model.cost_per_1k_in, model.cost_per_1k_out) == (0, 0)
    assert model.api_key is None and model.missing_env is None
    assert model.max_tokens is None
    assert model.timeouts == Timeouts()
    assert model.timeouts.first_byte_sec == 120


@pytest.mark.parametrize(
    ("provider", "url"),
    [
        ("anthropic", "https://api.anthropic.com"),
        ("openai", "https://api.openai.com/v1"),
        ("ollama", "http://localhost:11434"),
    ],
)
def test_default_base_url_per_provider(provider: str, url: str) -> None:
    config = parse_config(f"models: [{{name: m, provider: {provider}, model: x}}]", environ={})
    assert config.models[0].url == url


def test_base_url_trailing_slash_is_dropped() -> None:
    text = "models: [{name: m, provider: openai, model: x, base_url: 'http://h:8000/v1/'}]"
    assert parse_config(text, environ={}).models[0].url == "http://h:8000/v1"


def test_per_model_timeouts() -> None:
    text = "models: [{name: m, provider: openai, model: x, timeouts: {first_byte_sec: 0.5}}]"
    timeouts = parse_config(text, environ={}).models[0].timeouts
    assert timeouts.first_byte_sec == 0.5
    assert timeouts.connect_sec == Timeouts().connect_sec


def test_several_models_share_a_tier() -> None:
    text = """
models:
  - {name: a, provider: openai, model: x, tier: 1}
  - {name: b, provider: anthropic, model: y, tier: 1}
  - {name: c, provider: ollama, model: z, tier: 2}
"""
    config = parse_config(text, environ={})
    assert config.tiers == [1, 2]

    order, skipped = BackendPool(config.models).candidates(1, now=0.0)
    assert {b.name for b in order[:2]} == {"a", "b"}
    assert [b.name for b in order[2:]] == ["c"]
    assert skipped == []


# ---- $VAR expansion ----------------------------------------------------------------------------


def test_both_variable_forms_and_dollar_escape_are_expanded() -> None:
    text = """
models:
  - name: m
    provider: openai
    model: "price$$high-$SUFFIX"
    base_url: "http://${HOST}:$PORT/v1"
    api_key: ${KEY}
    tier: $TIER
"""
    environ = {"HOST": "10.0.0.7", "PORT": "8000", "KEY": "sk-x", "TIER": "2", "SUFFIX": "v2"}
    (model,) = parse_config(text, environ=environ).models

    assert model.url == "http://10.0.0.7:8000/v1"
    assert model.model == "price$high-v2"
    assert model.api_key == "sk-x"
    assert model.tier == 2  # expanded text is then validated like any other value


def test_expansion_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_ROUTER_TEST_MODEL_ID", "from-env")
    text = "models: [{name: m, provider: openai, model: $LLM_ROUTER_TEST_MODEL_ID}]"
    assert parse_config(text).models[0].model == "from-env"


@pytest.mark.parametrize("form", ["$MISSING_PROVIDER_KEY", "${MISSING_PROVIDER_KEY}"])
def test_missing_api_key_variable_loads_with_missing_env(form: str) -> None:
    text = f"""
models:
  - {{name: keyless, provider: anthropic, model: x, api_key: "{form}"}}
  - {{name: keyed, provider: openai, model: y, api_key: $PRESENT}}
"""
    keyless, keyed = parse_config(text, environ={"PRESENT": "sk-p"}).models

    assert keyless.api_key is None
    assert keyless.missing_env == "MISSING_PROVIDER_KEY"
    assert keyed.api_key == "sk-p" and keyed.missing_env is None
    assert "missing_env" not in keyless.model_dump()


def test_other_missing_variables_are_errors_with_key_paths() -> None:
    text = """
models:
  - {name: m, provider: openai, model: x, base_url: "http://$UPSTREAM_HOST/v1"}
server:
  read_timeout_sec: 30
  api_keys: [$ROUTER_CLIENT_KEY]
"""
    problems = problems_of(text)

    assert "models[0].base_url: environment variable UPSTREAM_HOST is not set" in problems
    # An unset *client* key must never silently open the router to anyone.
    assert "server.api_keys[0]: environment variable ROUTER_CLIENT_KEY is not set" in problems


def test_every_problem_is_reported_at_once_with_its_key_path() -> None:
    text = """
models:
  - name: a
    provider: foo
    model: ""
    tier: 0
    base_url: ftp://example.com
    api_key: $UNSET_KEY
  - {name: b, provider: openai, model: m, cost_per_1k_in: -1, bogus: 1}
  - {name: b, provider: openai, model: m2}
classifier: {tier1_max: 80, tier2_max: 20}
cache: {similarity_thresh: 1.5}
server: {read_timeout_sec: $UNSET_TIMEOUT}
surprise: {}
"""
    problems = problems_of(text)
    paths = [p.split(": ", 1)[0] for p in problems]

    for expected in [
        "models[0].provider",
        "models[0].model",
        "models[0].tier",
        "models[0].base_url",
        "models[1].cost_per_1k_in",
        "models[1].bogus",
        "classifier",
        "cache.similarity_thresh",
        "server.read_timeout_sec",
        "surprise",
    ]:
        assert expected in paths, (expected, problems)
    # The unset provider key is not a problem; nothing is reported that is not wrong.
    assert not any("UNSET_KEY" in p for p in problems)
    assert not any(p.startswith("models: ") for p in problems), problems
    assert "server.read_timeout_sec: environment variable UNSET_TIMEOUT is not set" in problems


def test_a_misspelt_key_is_told_the_closest_known_one() -> None:
    problems = problems_of("""
models:
  - {name: m, provider: openai, model: x, tir: 2, cost_per_1k_inn: 1}
clasifier: {tier1_max: 20}
cache: {enabeld: false}
learned: {modle: null}
workflows: {max_token_per_op: 10}
surprise: {}
""")
    assert sorted(problems) == sorted([
        "models[0].tir: unknown key (did you mean 'tier'?)",
        "models[0].cost_per_1k_inn: unknown key (did you mean 'cost_per_1k_in'?)",
        "clasifier: unknown key (did you mean 'classifier'?)",
        "cache.enabeld: unknown key (did you mean 'enabled'?)",
        "learned.modle: unknown key (did you mean 'model'?)",
        "workflows.max_token_per_op: unknown key (did you mean 'max_tokens_per_op'?)",
        "surprise: unknown key (allowed: cache, classifier, dedup, health, learned, models, "
        "server, state, upstream, workflows)",
    ])


def test_config_module_examples() -> None:
    import doctest

    import engine.core.config

    assert doctest.testmod(engine.core.config).failed == 0


def test_duplicate_model_names_are_rejected() -> None:
    text = """
models:
  - {name: twin, provider: openai, model: x}
  - {name: twin, provider: openai, model: y}
"""
    assert any("twin" in p for p in problems_of(text))


def test_a_model_may_not_be_named_auto() -> None:
    """``auto`` asks for routing: a model of that name could never be pinned."""
    text = "models:\n  - {name: auto, provider: openai, model: x}\n"
    assert problems_of(text) == ["models[0].name: 'auto' is not a model name: a "
                                 "request for model 'auto' is routed; pick another name"]


def test_no_models() -> None:
    assert problems_of("models: []") == ["models: at least one model is required"]
    assert problems_of("") == ["models: Field required"]


def test_bad_base_url_names_its_key() -> None:
    text = "models: [{name: m, provider: openai, model: x, base_url: 'localhost:8000'}]"
    (problem,) = problems_of(text)
    assert problem.startswith("models[0].base_url: ")
    assert "http" in problem


def test_size_limit(tmp_path: Path) -> None:
    big = MINIMAL + "#" * MAX_CONFIG_BYTES
    assert "larger than" in problems_of(big)[0]

    path = tmp_path / "big.yaml"
    path.write_text(big)
    with pytest.raises(ConfigInvalid) as caught:
        load_config(path, environ={})
    (problem,) = caught.value.problems
    assert str(path) in problem and "larger than" in problem


@pytest.mark.parametrize("text", ["- a\n- b\n", "42\n", "just words\n"])
def test_non_mapping_yaml(text: str) -> None:
    assert problems_of(text) == ["(top level): must be a mapping of sections"]


def test_invalid_yaml_names_the_line() -> None:
    (problem,) = problems_of("models:\n  - {name: a\n")
    assert problem.startswith("line ") and "not valid YAML" in problem


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        load_config(tmp_path / "absent.yaml", environ={})
    assert "cannot read" in caught.value.problems[0]

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00models")
    with pytest.raises(ConfigInvalid) as caught:
        load_config(binary, environ={})
    assert "UTF-8" in caught.value.problems[0]


def test_secrets_are_masked_in_reprs() -> None:
    text = """
models: [{name: m, provider: openai, model: x, api_key: sk-provider-secret-1}]
server: {api_keys: [client-secret-2]}
"""
    config = parse_config(text, environ={})
    assert config.models[0].api_key == "sk-provider-secret-1"
    assert "sk-provider-secret-1" not in repr(config)
    assert "client-secret-2" not in repr(config)


# ---- expand_vars properties --------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
PLAIN = st.text().filter(lambda t: "$" not in t)
# Text after a bare ``$NAME`` must not continue the name.
AFTER_BARE = PLAIN.filter(lambda t: not t or t[0] not in string.ascii_letters + string.digits + "_")


@given(PLAIN, st.dictionaries(NAMES, st.text()))
def test_text_without_dollar_is_unchanged(text: str, environ: dict[str, str]) -> None:
    assert expand_vars(text, environ) == (text, [])


@given(PLAIN, NAMES, st.text(), PLAIN)
def test_braced_variable_is_replaced_by_its_value(
    before: str, name: str, value: str, after: str
) -> None:
    assert expand_vars(f"{before}${{{name}}}{after}", {name: value}) == (
        before + value + after,
        [],
    )


@given(PLAIN, NAMES, st.text(), AFTER_BARE)
def test_bare_variable_is_replaced_by_its_value(
    before: str, name: str, value: str, after: str
) -> None:
    # Values are inserted verbatim: a "$" inside one is not expanded again.
    assert expand_vars(f"{before}${name}{after}", {name: value}) == (before + value + after, [])


@given(st.lists(NAMES, min_size=1, max_size=5))
def test_unset_variables_expand_empty_and_are_listed_in_order(names: list[str]) -> None:
    text = "-".join(f"${{{n}}}" for n in names)
    assert expand_vars(text, {}) == ("-" * (len(names) - 1), names)


@given(st.text(), st.dictionaries(NAMES, st.text()))
def test_double_dollar_round_trip(text: str, environ: dict[str, str]) -> None:
    assert expand_vars(text.replace("$", "$$"), environ) == (text, [])


# ---- a missing provider key, end to end --------------------------------------------------------


async def test_router_starts_without_a_provider_key_and_names_the_variable(
    fake_upstream: FakeUpstream,
) -> None:
    models = [
        model_entry(fake_upstream, "keyless", tier=1, api_key="$ROUTER_TEST_ABSENT_KEY"),
        model_entry(fake_upstream, "keyed", tier=2),
    ]
    async with open_router_client(models, environ={}) as client:
        health = await client.request("GET", "/health")
        assert health.status_code == 200

        openai_style = await client.chat(model="keyless")
        assert openai_style.status_code == 503
        error = openai_style.json()["error"]
        assert "ROUTER_TEST_ABSENT_KEY" in error["message"]
        assert error["code"] == "no_backend_available"

        anthropic_style = await client.messages(model="keyless")
        assert anthropic_style.status_code == 503
        body = anthropic_style.json()
        assert body["type"] == "error"
        assert "ROUTER_TEST_ABSENT_KEY" in body["error"]["message"]

        async with anthropic.AsyncAnthropic(
            base_url=client.url, api_key="any", max_retries=0
        ) as sdk:
            with pytest.raises(anthropic.APIStatusError) as caught:
                await sdk.messages.create(
                    model="keyless", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
                )
        assert caught.value.status_code == 503
        assert "ROUTER_TEST_ABSENT_KEY" in caught.value.message

        backends = await client.backends()
        assert backends["keyless"]["status"] == "down"
        assert "ROUTER_TEST_ABSENT_KEY" in backends["keyless"]["detail"]

        # Routed traffic goes around the unconfigured backend; it never reached the provider.
        routed = await client.chat("hello")
        assert routed.status_code == 200
        assert routed.headers["x-llm-router-model"] == "keyed"
    assert fake_upstream.requests("keyless") == []


async def test_only_unconfigured_backends_for_a_routed_request(fake_upstream: FakeUpstream) -> None:
    models = [model_entry(fake_upstream, "keyless", tier=1, api_key="${ROUTER_TEST_ABSENT_KEY}")]
    async with open_router_client(models, environ={}) as client:
        response = await client.chat("hello")
        assert response.status_code == 503
        assert "ROUTER_TEST_ABSENT_KEY" in response.json()["error"]["message"]
        assert (await client.request("GET", "/health")).status_code == 200


def test_config_is_immutable() -> None:
    config = parse_config(MINIMAL, environ={})
    assert isinstance(config, Config)
    with pytest.raises(ValidationError):
        config.models[0].tier = 3  # type: ignore[misc]


def test_the_builtin_router_puts_its_own_probability_at_the_tier1_boundary() -> None:
    from engine.runtime.models import load_models
    from engine.runtime.policy import RoutingPolicy

    assert load_models(parse_config(MINIMAL, environ={})).learned is None
    config = parse_config(MINIMAL + "learned: {model: builtin}\n", environ={})
    models = load_models(config)
    assert models.learned is not None
    policy = RoutingPolicy(config, learned=models.learned)
    # The built-in router's probabilities are low: its file puts 0.2 at the tier-1 boundary,
    # whatever learned.threshold (the sidecar's) says.
    assert policy.model_threshold == 0.2
    assert policy.to_score(0.2, policy.model_threshold) == config.classifier.tier1_max
    pinned = parse_config(MINIMAL + "learned: {model: builtin, model_threshold: 0.3}\n",
                          environ={})
    assert RoutingPolicy(pinned, learned=models.learned).model_threshold == 0.3


def test_feedback_retention_is_90_days_unless_set() -> None:
    assert parse_config(MINIMAL, environ={}).learned.feedback_retention_days == 90
    kept = parse_config(MINIMAL + "learned: {feedback_retention_days: null}\n", environ={})
    assert kept.learned.feedback_retention_days is None
    for bad in ("0", "-1", "40000"):
        with pytest.raises(ConfigInvalid, match="feedback_retention_days"):
            parse_config(MINIMAL + f"learned: {{feedback_retention_days: {bad}}}\n",
                         environ={})
