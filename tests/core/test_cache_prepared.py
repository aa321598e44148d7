"""A cache miss fingerprints its text once: the lookup that had to fingerprint it hands the
prepared text on (``ResponseCache.lookup_prepared``), and the store after the upstream call
keeps that very fingerprint. Without it a routed miss fingerprinted its prompt twice, ~8% of
its CPU each time (BENCHMARKS.md, the CPU-per-request section)."""

from __future__ import annotations

import pytest

from engine.core.cache.key import RequestKey
from engine.core.cache.responses import SETTLED_ABOVE, PreparedText, ResponseCache
from engine.core.cache.semantic import SemanticMatcher
from engine.core.cache.similarity import DEFAULT_THRESHOLD, Fingerprint
from engine.messages import ChatResult, TextPart, Usage

PARTITION = b"p" * 20


class CountingMatcher(SemanticMatcher):
    """The similarity function, counting the texts it fingerprints."""

    def __init__(self) -> None:
        super().__init__()
        self.fingerprinted: list[str] = []

    def fingerprint(self, text: str, *, normalised: str | None = None) -> Fingerprint:
        self.fingerprinted.append(text)
        return super().fingerprint(text, normalised=normalised)


@pytest.fixture(scope="module")
def matcher() -> CountingMatcher:
    return CountingMatcher()


def make_cache(matcher: SemanticMatcher) -> ResponseCache:
    return ResponseCache(matcher=matcher, max_entries=100, max_bytes=1 << 20,
                         max_entry_bytes=1 << 16, ttl=10.0, threshold=DEFAULT_THRESHOLD)


def rkey(text: str) -> RequestKey:
    return RequestKey(exact=PARTITION, text=text, full=PARTITION + text.encode())


def store(cache: ResponseCache, text: str, prepared: PreparedText | None = None) -> None:
    entry = cache.store_entry(rkey(text), ChatResult(content=(TextPart(f"re: {text}"),),
                                                     usage=Usage(10, 5)),
                              model="m", tier=1, cost_usd=0.01, reference_usd=0.03, now=0.0,
                              prepared=prepared)
    assert entry is not None


def test_a_miss_hands_its_fingerprint_to_the_store(matcher: CountingMatcher) -> None:
    cache = make_cache(matcher)
    store(cache, "What is the capital of France?")
    text = "How do volcanoes form under the ocean floor?"
    hit, prepared = cache.lookup_prepared(rkey(text), 1.0)
    assert hit is None and prepared is not None
    fresh = cache.prepare(text)
    assert prepared.norm == fresh.norm
    assert prepared.fingerprint.text == fresh.fingerprint.text
    assert (prepared.fingerprint.vector == fresh.fingerprint.vector).all()
    matcher.fingerprinted.clear()
    entry = cache.store_entry(rkey(text), ChatResult(content=(TextPart("magma"),),
                                                     usage=Usage(10, 5)),
                              model="m", tier=1, cost_usd=0.01, reference_usd=0.03, now=1.0,
                              prepared=prepared)
    assert entry is not None and entry.semantic and matcher.fingerprinted == []
    again, _ = cache.lookup_prepared(rkey(text), 2.0)
    assert again is not None and again.exact


def test_a_lookup_that_needs_no_fingerprint_computes_none(matcher: SemanticMatcher) -> None:
    cache = make_cache(matcher)
    text = "What is the capital of France?"
    assert cache.lookup_prepared(rkey(text), 0.0) == (None, None)  # an empty partition
    store(cache, text)
    hit, prepared = cache.lookup_prepared(rkey(text), 1.0)  # an exact hit
    assert hit is not None and prepared is None
    given = cache.prepare("Where is Paris?")
    assert cache.lookup_prepared(rkey("Where is Paris?"), 1.0, prepared=given)[1] is given


class ComparingMatcher(SemanticMatcher):
    """The similarity function, counting the candidates a lookup compares."""

    def __init__(self) -> None:
        super().__init__()
        self.compared = 0

    def match(self, query: Fingerprint, cached: Fingerprint, *,
              threshold: float) -> tuple[bool, float]:
        self.compared += 1
        return super().match(query, cached, threshold=threshold)


TEXTS = [
    "What is the capital of France?", "what is the capital of france",
    "Why is the sky blue?", "Why is the sky blue",
    "How many legs does a spider have?", "How many legs do spiders have?",
    "How do volcanoes form under the ocean floor?", "Best way to learn Python quickly?",
    "Is it safe to swim after eating?", "Why do cats purr?",
]


def test_a_lookup_compares_no_candidate_too_far_to_match() -> None:
    matcher = ComparingMatcher()
    cache = make_cache(matcher)
    for text in TEXTS[::2]:
        store(cache, text)
    hit, _ = cache.lookup_prepared(rkey("Explain the rules of cricket to a beginner."), 1.0)
    assert hit is None and matcher.compared == 0  # four candidates, none near enough
    hit, _ = cache.lookup_prepared(rkey("Why is the sky blue"), 1.0)
    assert hit is not None and matcher.compared >= 1


@pytest.mark.parametrize("threshold", [0.6, DEFAULT_THRESHOLD, 0.95])
def test_no_pair_below_the_least_cosine_matches(matcher: CountingMatcher,
                                                threshold: float) -> None:
    prints = [matcher.fingerprint(t) for t in TEXTS]
    hits = 0
    for a in prints:
        for b in prints:
            ok, _ = matcher.match(a, b, threshold=threshold)
            if ok:
                hits += 1
                assert float(a.vector @ b.vector) >= matcher.least_cosine(a, threshold)
    assert hits > len(prints)  # more than each text with itself: paraphrases match too


# -- the lexical part, worked out on first use ----------------------------------------------


def test_a_miss_near_nothing_works_out_no_lexical_part(matcher: CountingMatcher) -> None:
    """A lookup that compares no candidate reads only the query's vector; the store keeps
    the fingerprint unsettled, and the first comparison that needs it settles it once."""
    cache = make_cache(matcher)
    store(cache, "Why is the sky blue?")
    text = "Explain the rules of cricket to a beginner."
    hit, prepared = cache.lookup_prepared(rkey(text), 1.0)
    assert hit is None and prepared is not None and not prepared.fingerprint.settled
    store(cache, text, prepared)
    kept = cache._entries[max(cache._entries)]
    assert kept[3][2] is None  # packed without its lexical part

    hit, _ = cache.lookup_prepared(rkey("Explain the rules of cricket to a beginner!"), 2.0)
    assert hit is not None and hit.similarity >= DEFAULT_THRESHOLD
    settled = cache._entries[max(cache._entries)]
    assert settled[3][2] is not None  # the comparison's work is kept with the entry
    assert settled[:3] == kept[:3] and settled[4:] == kept[4:]


def test_a_pair_the_guard_keys_tell_apart_is_read_no_further(matcher: CountingMatcher) -> None:
    """Templated questions (one field varies) are near in vector and told apart by the first
    guards: the lookup reads only the two guard keys, and both entries keep their key, not a
    lexical part, so the next lookup reads neither again."""
    cache = make_cache(matcher)
    first = "Question 1: how does a tax relate to a kernel? Answer briefly."
    store(cache, first)
    text = "Question 2: how does a tax relate to a kernel? Answer briefly."
    hit, prepared = cache.lookup_prepared(rkey(text), 1.0)
    assert hit is None and prepared is not None and not prepared.fingerprint.settled
    store(cache, text, prepared)
    older, newer = (cache._entries[i][3] for i in sorted(cache._entries))
    assert older[2] == matcher.fingerprint(first).guard_key and older[2][0] == ("1",)
    assert newer[2] == prepared.fingerprint.guard_key and newer[2][0] == ("2",)
    again = matcher.unpack(older)
    assert not again.settled and again.guard_key == older[2]
    assert again.features.numbers == {"1"}  # and it settles as any other when needed


def test_a_settled_fingerprint_is_the_one_made_at_once(matcher: SemanticMatcher) -> None:
    for text in [*TEXTS, "", "Was Obama born in 1961 or 1962?", "Ünïcödé & ünits: 3,5 km"]:
        lazy, eager = matcher.fingerprint(text), matcher.fingerprint(text)
        _ = eager.features  # settled now: the property computes the features and keeps them
        again = matcher.unpack(lazy.pack())  # packed unsettled, settled after unpacking
        other = matcher.unpack(eager.pack())
        for fp in (lazy, again, other):
            assert fp.text == eager.text and (fp.vector == eager.vector).all()
            assert fp.features.words == eager.features.words
            assert fp.features.numbers == eager.features.numbers
            assert (fp.salience == eager.salience).all()
            assert (fp.word_vectors == eager.word_vectors).all()
        external = matcher.fingerprint(text).with_vector(eager.vector * 2)
        assert external.external and not external.settled
        assert external.features.words == eager.features.words


def test_an_unsettled_pack_needs_the_table(matcher: SemanticMatcher) -> None:
    packed = matcher.fingerprint("Why do cats purr?").pack()
    with pytest.raises(ValueError):
        Fingerprint.unpack(packed)
    assert Fingerprint.unpack(packed, matcher.embedder.table).features.words


def test_a_long_text_is_prepared_whole(matcher: SemanticMatcher) -> None:
    """A text the gateway prepares in a worker thread (past ``SETTLED_ABOVE`` characters) is
    read for the guards there too: never later, on the event loop, by a comparison."""
    cache = make_cache(matcher)
    short = "Why is the sky blue?"
    long = " ".join(["Why is the sky blue over the sea at noon in summer?"] * 60)
    assert len(long) > SETTLED_ABOVE
    assert not cache.prepare(short).fingerprint.settled
    assert cache.prepare(long).fingerprint.settled
