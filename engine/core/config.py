"""The configuration file: loading, ``$VAR`` expansion and validation.

The format is ``config.yaml``'s (docs/configuration.md). Loading is strict and reports
*every* problem at once, each with its key path (``models[1].tier: ...``), so
``llm-router check`` can print them all.

Provider keys are special: a missing ``$ANTHROPIC_API_KEY`` must not stop the router from
starting (the other backends may be fine), so an ``api_key`` whose variable is unset loads as
``None`` with the variable's name kept in ``missing_env``; requests to that backend then fail
with an error naming the variable. Any other unset variable is a configuration error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.errors import ConfigInvalid, did_you_mean

from .redis_address import RedisAddress

__all__ = [
    "CacheConfig",
    "ClassifierConfig",
    "Config",
    "DedupConfig",
    "HealthConfig",
    "LearnedConfig",
    "ModelConfig",
    "ServerConfig",
    "StateConfig",
    "Timeouts",
    "UpstreamConfig",
    "WorkflowLimits",
    "WorkflowsConfig",
    "load_config",
    "parse_config",
]

MAX_CONFIG_BYTES = 1 << 20

DEFAULT_BASE_URLS = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com/v1",
    "ollama": "http://localhost:11434",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Section):
    """Upstream deadlines, in seconds. ``first_byte`` covers a whole non-streamed answer."""

    connect_sec: float = Field(10.0, gt=0)
    first_byte_sec: float = Field(120.0, gt=0)
    idle_sec: float = Field(60.0, gt=0)
    total_sec: float = Field(600.0, gt=0)


class ModelConfig(_Section):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
    provider: Literal["anthropic", "openai", "ollama"]
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    missing_env: str | None = Field(default=None, exclude=True)
    cost_per_1k_in: float = Field(0.0, ge=0)
    cost_per_1k_out: float = Field(0.0, ge=0)
    max_tokens: int | None = Field(default=None, gt=0)
    tier: int = Field(1, ge=1, le=10)
    max_concurrency: int = Field(256, ge=1)
    timeouts: Timeouts = Timeouts()

    @field_validator("name")
    @classmethod
    def _not_auto(cls, name: str) -> str:
        if name == "auto":  # a request naming it would be routed, never pinned to this model
            raise ValueError("'auto' is not a model name: a request for model 'auto' is "
                             "routed; pick another name")
        return name

    # A field validator (not a model one) so a bad URL is reported at its own key path and
    # alongside the entry's other problems: model validators only run once every field is valid.
    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"must be an http(s) URL, got {url!r}")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _default_base_url(self) -> ModelConfig:
        if self.base_url is None:
            object.__setattr__(self, "base_url", DEFAULT_BASE_URLS[self.provider])
        return self

    @property
    def url(self) -> str:
        return self.base_url or DEFAULT_BASE_URLS[self.provider]


class ClassifierConfig(_Section):
    tier1_max: int = Field(30, ge=0, le=100)
    tier2_max: int = Field(70, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> ClassifierConfig:
        if self.tier1_max > self.tier2_max:
            raise ValueError("tier1_max must not exceed tier2_max")
        return self


class EmbedderConfig(_Section):
    """Extension: the cache's sentence vectors from an OpenAI-compatible embeddings endpoint
    (OpenAI, Ollama, vLLM, a local server) instead of the packaged WordLlama table. ``url`` is
    the endpoint (``.../v1/embeddings``; a URL ending in ``/v1`` gets ``/embeddings``
    appended); ``api_key_env`` names the variable holding its key (sent as a bearer token,
    never logged); a call that takes longer than ``timeout_ms`` or fails skips the cache for
    that request. ``dimensions`` is passed on to models that can shorten their vectors.
    ``unaligned_cosine``: the model's cosine at which a pair the guards allow but that is not
    a word-for-word paraphrase hits at the default threshold; unset, only aligned pairs hit
    (no bar is safe for every model: measure one with ``bench/cache_similarity.py``)."""

    url: str
    model: str = Field(min_length=1)
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_key: str | None = Field(default=None, repr=False, exclude=True)
    timeout_ms: float = Field(500.0, gt=0, le=30_000)
    dimensions: int | None = Field(None, ge=1, le=16_384)
    unaligned_cosine: float | None = Field(None, ge=0, le=1)

    @field_validator("url")
    @classmethod
    def _endpoint(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"must be an http(s) URL, got {url!r}")
        url = url.rstrip("/")
        return url if url.endswith("/embeddings") else url + "/embeddings"


class TenantThresholdConfig(_Section):
    """Extension: how feedback on cached answers moves one tenant's similarity threshold. A
    cache hit rated below ``bad_below`` raises that tenant's threshold by ``step``, up to
    ``ceiling``; it never goes below the configured ``similarity_thresh`` (the floor)."""

    enabled: bool = True
    step: float = Field(0.02, gt=0, le=0.5)
    ceiling: float = Field(0.99, ge=0, le=1)
    bad_below: float = Field(0.5, gt=0, le=1)


class CacheConfig(_Section):
    enabled: bool = True
    max_size: int = Field(1000, ge=0)
    ttl_sec: float = Field(300.0, gt=0)
    similarity_thresh: float = Field(0.85, ge=0, le=1)
    # Extensions: a byte budget over all entries, a cap per entry, and caching only requests
    # whose answer is reproducible (temperature 0 or a seed).
    max_bytes: int = Field(64 * 1024 * 1024, ge=0)
    max_entry_bytes: int = Field(1024 * 1024, ge=0)
    deterministic_only: bool = False
    embedder: EmbedderConfig | None = None
    tenant_threshold: TenantThresholdConfig = TenantThresholdConfig()


class DedupConfig(_Section):
    """Extension: join identical concurrent requests into one upstream call."""

    enabled: bool = True


class HealthConfig(_Section):
    """Extension: how a failed backend returns to rotation (``engine.core.pool``). It is ejected
    for ``probe_interval_sec``, then sent one real request as a probe; each failed probe
    doubles the wait, up to ``max_probe_interval_sec``."""

    probe_interval_sec: float = Field(5.0, gt=0, le=3600)
    max_probe_interval_sec: float = Field(60.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _ordered(self) -> HealthConfig:
        if self.probe_interval_sec > self.max_probe_interval_sec:
            raise ValueError("probe_interval_sec must not exceed max_probe_interval_sec")
        return self


class UpstreamConfig(_Section):
    """Extension: the upstream connection pool. A kept-alive connection idle for longer than
    ``keepalive_expiry_sec`` is closed; at most ``max_connections_per_origin`` are open to one
    scheme, host and port at once (a stream holds one for its whole length)."""

    keepalive_expiry_sec: float = Field(30.0, gt=0, le=3600)
    max_connections_per_origin: int = Field(512, ge=1, le=65536)


class WorkflowLimits(_Section):
    """Bounds on what one workflow may ask for: the limit fields of the ``workflows:``
    section (:class:`WorkflowsConfig` is one), what ``load_workflow`` checks a workflow against.

    ``max_depth`` counts ops along the longest chain (the plan's generations);
    ``render_timeout_sec`` bounds each render of the workflow's prompt templates (and all
    renders of one dry run).
    """

    max_yaml_bytes: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_ops: int = Field(200, ge=1, le=10_000)
    max_depth: int = Field(50, ge=1, le=10_000)
    max_tokens_per_op: int = Field(32768, ge=1)
    max_template_bytes: int = Field(64 * 1024, ge=1024)
    render_timeout_sec: float = Field(2.0, gt=0, le=60)


class WorkflowsConfig(WorkflowLimits):
    """Extension: where ready pipelines and prompt templates live (relative paths are taken
    from the config file's folder), run concurrency, and the limits on submitted workflows
    (the fields it has as a :class:`WorkflowLimits`)."""

    dir: str = "workflows"
    templates_dir: str = "templates"
    max_concurrency: int = Field(8, ge=1, le=1024)
    #: Runs executing at once; later ones wait, ``queued``.
    max_concurrent_runs: int = Field(16, ge=1, le=10_000)
    #: Finished runs (and memoized op results) are deleted this many days after they end.
    retention_days: float = Field(7.0, gt=0, le=3650)
    #: An op answer longer than this (UTF-8 bytes) fails the op: a run's record keeps every
    #: answer, and a resumed run feeds them to the ops downstream.
    max_output_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)


class StateConfig(_Section):
    """Where the router keeps what outlives a request. ``path``: the embedded store (SQLite)
    for workflow runs, relative to the config file's folder. ``redis_url``: a Redis that
    several router processes share (cache, dedup, backend health, totals, feedback, runs);
    unset, each process keeps its own state. ``redis_timeout_ms``: how long one Redis command
    may take before Redis is treated as down (the router then serves from local state)."""

    path: str = "llm-router-state.db"
    redis_url: str | None = None
    redis_timeout_ms: int = Field(default=250, ge=10, le=10_000)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            RedisAddress.from_url(value)  # ValueError: the problem, for the config message
        return value

    @property
    def redis(self) -> RedisAddress | None:
        return RedisAddress.from_url(self.redis_url) if self.redis_url else None


class CompareConfig(_Section):
    """Comparisons the router makes itself (``learned.compare``): on a random ``share`` of
    routed answers it asks the request's other tier for a second answer in the background
    and has the configured model ``judge`` grade both; the two grades are reported as
    feedback with ``other_quality``, which is what opens online learning's floors. Off while
    ``share`` is 0 (the default). ``max_running``: comparisons at once (a sampled answer is
    skipped beyond it); ``max_usd_per_hour``: what comparisons may spend in an hour, both
    calls together (a sampled answer is skipped once it is spent)."""

    share: float = Field(0.0, ge=0, le=1)
    judge: str | None = None
    max_running: int = Field(2, ge=1, le=64)
    max_usd_per_hour: float = Field(1.0, ge=0)


class LearnedConfig(_Section):
    """Learned routing and calibration.

    ``threshold``: the "needs the strong model" probability (of the trained router or the
    sidecar) that corresponds to the tier 1 / tier 2 boundary when it is put on the 0-100
    score scale. ``model``: a trained router file (``llm-router router train``; ``builtin``: the
    one shipped with the package, which the shipped ``config.yaml`` names; unset or ``null``:
    the heuristic alone, the contract's score), blended with the heuristic by
    ``model_weight``. ``model_threshold``: the trained router's own
    probability at that boundary; by default the one its file carries (the built-in router's
    is 0.2: its calibrated probabilities are low), else ``threshold``. ``gate``: use the
    router file's familiarity gate, which leans the router's belief on the conversation's
    length for a request unlike its training rows (``engine.core.routing.gate``).
    ``sidecar_url`` / ``sidecar_weight`` / ``sidecar_timeout_ms``: an external classifier.
    ``online`` and ``online_*``: online learning of the trained router from
    ``POST /v1/feedback`` (``engine.core.routing.online``: step rate and bound, the most the
    correction may shift log-odds, its half-life in reports, one reporter's cap in decayed
    reports, the floor's tolerance, and ``online_regions``: per-region levels,
    ``engine.core.routing.regions``).
    ``feedback_retention_days``: reports older than this are deleted from ``feedback_db``
    once counted (``null``: kept for ever; ``engine.stores.feedback``).
    The rest drives threshold calibration from ``POST /v1/feedback``
    (``engine.core.routing.calibration``).
    """

    threshold: float = Field(0.5, gt=0, lt=1)
    model: str | None = None
    model_weight: float = Field(0.7, ge=0, le=1)
    model_threshold: float | None = Field(None, gt=0, lt=1)
    gate: bool = True
    sidecar_url: str | None = None
    sidecar_weight: float = Field(0.7, ge=0, le=1)
    sidecar_timeout_ms: float = Field(50.0, gt=0, le=10_000)
    feedback_db: str = "llm-router-feedback.db"
    feedback_retention_days: float | None = Field(90.0, gt=0, le=36500)
    calibrate: bool = True
    target_quality: float = Field(0.8, ge=0, le=1)
    min_samples: int = Field(20, ge=1)
    max_step: int = Field(5, ge=1, le=50)
    band: int = Field(15, ge=1, le=100)
    online: bool = True
    online_rate: float = Field(0.1, gt=0, le=10)
    online_max_step: float = Field(0.5, gt=0, le=5)
    online_max_shift: float = Field(3.0, gt=0, le=10)
    online_half_life: float = Field(2000.0, ge=10)
    online_key_cap: float = Field(200.0, ge=1)
    online_tolerance: float = Field(0.02, gt=0, le=1)
    online_regions: bool = True
    compare: CompareConfig = Field(default_factory=CompareConfig)

    @field_validator("sidecar_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"must be an http(s) URL, got {url!r}")
        return url


class ServerConfig(_Section):
    """Client connections. ``read_timeout_sec``: a request's body must arrive within it (408).
    ``keep_alive_sec``: an idle connection (no request in progress, or one whose headers are
    not complete yet) is closed after it. ``write_timeout_sec``: if set, a cap on waiting for
    a non-streamed answer (504); unset, the models' own ``timeouts`` end a request."""

    read_timeout_sec: float = Field(30.0, gt=0)
    write_timeout_sec: float | None = Field(default=None, gt=0)
    keep_alive_sec: float = Field(15.0, gt=0)
    # A streaming client that accepts no data for this long is disconnected and its upstream
    # call cancelled.
    stream_write_timeout_sec: float = Field(60.0, gt=0)
    # What one upstream stream may hold for its slowest client before the upstream read waits
    # (one client) or the laggard is cut off (clients sharing a deduplicated stream).
    stream_buffer_bytes: int = Field(1024 * 1024, ge=4096)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # Client keys allowed to call the router; empty means any key (or none) is accepted.
    api_keys: tuple[str, ...] = Field(default=(), repr=False)
    #: Enables the admin API (``/v1/admin/keys``) and client keys; take it from the
    #: environment (``${LLM_ROUTER_ADMIN_KEY}``). At least 16 characters.
    admin_key: str | None = Field(default=None, repr=False, min_length=16, max_length=512)
    #: One line per HTTP request on the ``llm_router.access`` logger (docs/observability.md).
    access_log: bool = True
    #: Access lines of chat requests carry the last message's text (``--log-prompts``).
    log_prompts: bool = False


class Config(_Section):
    models: tuple[ModelConfig, ...]
    classifier: ClassifierConfig = ClassifierConfig()
    cache: CacheConfig = CacheConfig()
    dedup: DedupConfig = DedupConfig()
    health: HealthConfig = HealthConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    learned: LearnedConfig = LearnedConfig()
    server: ServerConfig = ServerConfig()
    workflows: WorkflowsConfig = WorkflowsConfig()
    state: StateConfig = StateConfig()
    # The folder relative paths are resolved from (the config file's); set by load_config.
    config_dir: str = Field(default=".", exclude=True)

    def path(self, relative: str) -> Path:
        return Path(self.config_dir) / relative

    # Not ``min_length=1``: pydantic checks that against the entries that validated, so a
    # config whose every model has a problem would also be told it has no models.
    @field_validator("models")
    @classmethod
    def _some_model(cls, models: tuple[ModelConfig, ...]) -> tuple[ModelConfig, ...]:
        if not models:
            raise ValueError("at least one model is required")
        return models

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: set[str] = set()
        for model in self.models:
            if model.name in seen:
                raise ValueError(f"two models are named {model.name!r}")
            seen.add(model.name)
        return self

    @model_validator(mode="after")
    def _judge_configured(self) -> Config:
        compare = self.learned.compare
        if compare.share > 0:
            if compare.judge is None:
                raise ValueError("learned.compare: share is set, so judge must name the "
                                 "model that grades the answers")
            if self.model_named(compare.judge) is None:
                raise ValueError(f"learned.compare.judge: no model is named {compare.judge!r}")
            if len(self.tiers) < 2:
                raise ValueError("learned.compare: comparisons need models of two tiers")
        return self

    def model_named(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    @property
    def tiers(self) -> list[int]:
        return sorted({m.tier for m in self.models})


# ---- loading -----------------------------------------------------------------------------------

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*)|(\$))")


def expand_vars(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``$VAR`` and ``${VAR}`` in ``text``; ``$$`` is a literal ``$``.

    Returns the expanded text and the names of unset variables (expanded as empty).

    >>> expand_vars("${A}-$B-$$C", {"A": "1", "B": "2"})
    ('1-2-$C', [])
    >>> expand_vars("key=$NOPE", {})
    ('key=', ['NOPE'])
    """
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match.group(3):
            return "$"
        name = match.group(1) or match.group(2)
        if name not in environ:
            missing.append(name)
            return ""
        return environ[name]

    return _VAR.sub(substitute, text), missing


def _expand_tree(node: Any, path: str, environ: Mapping[str, str], problems: list[str]) -> Any:
    if isinstance(node, str):
        value, missing = expand_vars(node, environ)
        if missing and path.endswith(".api_key"):
            return _MissingKey(missing[0])
        for name in missing:
            problems.append(f"{path}: environment variable {name} is not set")
        return value
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            out[key] = _expand_tree(value, sub, environ, problems)
        return out
    if isinstance(node, list):
        return [_expand_tree(v, f"{path}[{i}]", environ, problems) for i, v in enumerate(node)]
    return node


class _MissingKey:
    def __init__(self, name: str) -> None:
        self.name = name


def _format_loc(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "tagged-union")) or part in ("list", "dict"):
            continue
        else:
            path += f".{part}" if path else part
    return path or "(top level)"


def _section_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The config section (a model class) holding the key at ``loc``."""
    section: type[BaseModel] = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue  # an entry of a list: the list's field already named its section
        field = section.model_fields.get(part)
        found = _model_in(field.annotation) if field is not None else None
        if found is None:
            return None
        section = found
    return section


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    """The message for a key no section has: the closest known key, else the known keys.

    >>> _unknown_key(("clasifier",))
    "unknown key (did you mean 'classifier'?)"
    >>> _unknown_key(("models", 0, "temprature"))[:35]
    'unknown key (allowed: api_key, base'
    """
    section = _section_at(loc)
    if section is None:
        return "unknown key"
    keys = [name for name, f in section.model_fields.items() if not f.exclude]
    return "unknown key" + (did_you_mean(loc[-1], keys) or f" (allowed: {', '.join(sorted(keys))})")


def parse_config(text: str, *, environ: Mapping[str, str] | None = None) -> Config:
    """Parse and validate configuration YAML text.

    Raises:
        ConfigInvalid: with every problem found, each prefixed by its key path.
    """
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise ConfigInvalid([f"(file): larger than {MAX_CONFIG_BYTES} bytes"])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise ConfigInvalid([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigInvalid(["(top level): must be a mapping of sections"])
    problems: list[str] = []
    data = _expand_tree(data, "", os.environ if environ is None else environ, problems)
    models = data.get("models")
    if isinstance(models, list):
        for entry in models:
            if isinstance(entry, dict) and isinstance(entry.get("api_key"), _MissingKey):
                entry["missing_env"] = entry.pop("api_key").name
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = _unknown_key(error["loc"])
            problems.append(f"{_format_loc(error['loc'])}: {message}")
        raise ConfigInvalid(problems) from None
    embedder = config.cache.embedder
    if embedder is not None and embedder.api_key_env is not None:
        key = (os.environ if environ is None else environ).get(embedder.api_key_env)
        if not key:
            problems.append(f"cache.embedder.api_key_env: ${embedder.api_key_env} is not set")
        else:
            object.__setattr__(embedder, "api_key", key)  # frozen; not part of the file
    if problems:
        raise ConfigInvalid(problems)
    return config


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration file at ``path``.

    Raises:
        ConfigInvalid: the file is missing, unreadable, too large, or invalid.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigInvalid([f"{path}: larger than {MAX_CONFIG_BYTES} bytes"])
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigInvalid([f"{path}: not UTF-8 text"]) from None
    config = parse_config(text, environ=environ)
    config = config.model_copy(update={"config_dir": str(path.resolve().parent)})
    model = config.learned.model
    if model is not None and model != "builtin" and not config.path(model).is_file():
        raise ConfigInvalid([f"learned.model: no such file: {config.path(model)}"])
    return config
