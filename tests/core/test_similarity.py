"""The semantic-cache building blocks: ``engine.core.cache.similarity`` and
``engine.core.cache.guards``
(the documented cache examples, each guard on a named QQP-style pair, word-for-word alignment, the
score's meaning, offline loading) and ``engine.core.cache.vector_index`` (add, search, remove, both
regimes, against brute force)."""

from __future__ import annotations

import re
import socket
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.cache.guards import (
    KEYED_GUARDS,
    TEXT_GUARDS,
    guard_key,
    keyed_veto,
    read_guard_key,
    read_text,
)
from engine.core.cache.similarity import (
    _CONTRACTIONS,
    DEFAULT_THRESHOLD,
    Embedder,
    Fingerprint,
    compare,
    guard_veto,
    guards_allow,
    match,
    normalize_text,
    similarity,
)
from engine.core.cache.vector_index import VectorIndex
from engine.errors import RouterError

FRANCE = "What is the capital of France?"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve a host or open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def pair(embedder: Embedder, query: str, cached: str) -> tuple[Fingerprint, Fingerprint]:
    return embedder.fingerprint(query), embedder.fingerprint(cached)


# -- the documented examples ---------------------------------------------------------------------


@pytest.mark.parametrize("text", [FRANCE, "what's   the BEST way?", "", " ", "日本語 🙂 ok"])
def test_one_text_is_embedded_and_fingerprinted_as_in_a_batch(embedder: Embedder,
                                                              text: str) -> None:
    # a routed request embeds one text, and the cache fingerprints the text it normalised:
    # each takes a shorter way, to the same bits
    alone, batched = embedder.embed([text]), embedder.embed([text, FRANCE])
    assert alone.shape == (1, 256) and alone[0].tobytes() == batched[0].tobytes()
    given = embedder.fingerprint(text, normalised=normalize_text(text))
    made = embedder.fingerprint(text)
    assert given.text == made.text and given.vector.tobytes() == made.vector.tobytes()


def test_paraphrase_of_france_capital_hits(embedder: Embedder) -> None:
    hit, score = match(*pair(embedder, "What's France's capital?", FRANCE))
    assert hit and score >= DEFAULT_THRESHOLD


def test_unrelated_go_question_misses(embedder: Embedder) -> None:
    hit, score = match(*pair(embedder, "How do I write Go code?", FRANCE))
    assert not hit and score < 0.5


def test_identical_prompt_scores_one(embedder: Embedder) -> None:
    assert match(*pair(embedder, FRANCE, FRANCE)) == (True, pytest.approx(1.0, abs=1e-6))


def test_polite_frame_is_not_a_second_person(embedder: Embedder) -> None:
    polite, plain = pair(embedder, "Could you tell me the capital of France?",
                         "Tell me the capital of France.")
    assert polite.persons == plain.persons == {1}  # "me", not the "you" of "could you"
    assert match(polite, plain)[0]


# -- guards --------------------------------------------------------------------------------------


VETOED = [
    ("What is the capital of Germany?", FRANCE, "entity"),
    ("Is ibuprofen not safe?", "Is ibuprofen safe?", "negation"),
    ("Isn't ibuprofen safe?", "Is ibuprofen safe?", "negation"),
    ("Is it possible to not have an illness and be insane?",
     "Is it possible to have an illness and not be insane?", "negation"),
    ("Give me 3 items to pack for a hike", "Give me 4 items to pack for a hike", "number"),
    ("Give me three items to pack for a hike", "Give me 4 items to pack for a hike", "number"),
    ("How was Friday Night Lights filmed?", "Where was Friday Night Lights filmed?",
     "question"),
    ("What are your predictions for the election?",
     "What are some predictions for the election?", "person"),
    # "I" acts, "me" is acted on: the roles are swapped
    ("How can I get someone to fall out of love with me?",
     "How do I fall out of love with someone?", "role"),
    ("Where can I find web developers to help me with my web?",
     "Where can I find web developers?", "role"),
    # polar opposites, function words or content words, whatever their vectors say
    ("What are the best SEO on page techniques in 2015?",
     "What is the best SEO off page techniques in 2015?", "opposite"),
    ("Why is the velocity changing in the different reference frames?",
     "Why does the velocity change in the same reference frame?", "opposite"),
    ("How are buffalo meat and cow beef similar?", "How do buffalo meat and cow beef differ?",
     "opposite"),
    ("What are the worst books on leadership?", "What are the best books on leadership?",
     "opposite"),
    # an acronym spelled like a function word is a named entity, not the pronoun
    ("What are the best books about leadership?",
     "What are the best books on IT leadership?", "entity"),
    ("How do I get a visa for us?", "How do I get a visa for the US?", "role"),
    # a repeated phrase changes the structure
    ("Is it bad to be good?", "Is it good to be bad or bad to be good?", "repeat"),
    ("What's it like to go from devout Christian to atheist?",
     "What's it like to go from devout Christian to atheist to devout Christian?", "repeat"),
    # two words trade places around a third: who does what to whom
    ("What would happen if Pakistan nuked India?", "What will happen if India nukes Pakistan?",
     "order"),
    ("Are extroverts more successful than introverts?",
     "Are introverts more successful than extroverts?", "order"),
]


@pytest.mark.parametrize(("query", "cached", "reason"), VETOED)
def test_guard_vetoes(embedder: Embedder, query: str, cached: str, reason: str) -> None:
    q, c = pair(embedder, query, cached)
    assert guard_veto(q, c) == reason
    assert guard_veto(c, q) == reason
    assert reason in compare(q, c, all_vetoes=True).vetoes
    assert not guards_allow(q, c)
    hit, score = match(q, c)
    assert not hit and score < 0.5


def test_guards_allow_same_numbers_and_inflections(embedder: Embedder) -> None:
    q, c = pair(embedder, "What are 3 good places to visit in Paris?",
                "What are 3 good place to visit in Paris?")
    assert guards_allow(q, c)
    assert match(q, c)[0]


def test_extra_salient_word_lowers_the_score(embedder: Embedder) -> None:
    base = embedder.fingerprint("What are simple home exercises to strengthen the back?")
    narrower = embedder.fingerprint(
        "What are simple home exercises to strengthen the back after surgery?"
    )
    assert guards_allow(base, narrower)  # not a veto: a penalty on the score
    cosine = float(base.vector @ narrower.vector)
    assert similarity(base, narrower) < 0.5 + 0.5 * cosine - 0.1
    assert not match(base, narrower)[0]


def test_acronym_is_a_content_word_but_shouting_is_not(embedder: Embedder) -> None:
    acronyms = embedder.fingerprint("Can IT staff in the US use AI?")
    assert acronyms.words == ("it", "staff", "us", "use", "ai")
    assert acronyms.entity == (True, False, True, False, True)
    assert acronyms.persons == set()  # "US" is not "us"
    shouted = embedder.fingerprint("HOW DO I LEARN IT FAST?")
    assert shouted.words == ("learn", "fast") and shouted.entity == (False, False)
    assert shouted.persons == {1}


# -- word-for-word alignment: only aligned pairs reach the default threshold ---------------------


ALIGNED = [
    ("What's France's capital?", FRANCE),  # "of" / possessive hinge
    ("Who is better, Messi or Ronaldo?", "Who is better, Ronaldo or Messi?"),  # conjuncts
    ("Why can't I like comments on Instagram?", "Why can't I like comments in Instagram?"),
    ("What's the chemical formula of milk?", "What is the chemical formula for milk?"),
    ("What are some examples of solids?", "What are solids? What are some examples?"),
    ("Could you tell me the capital of France?", "Tell me the capital of France."),
    ("What is the best android game that you have ever played?",
     "What is the best android game you have played?"),  # relative "that", filler "ever"
    ("Why is Hillary Clinton so evil?", "Why is Hillary Clinton evil?"),
]


@pytest.mark.parametrize(("query", "cached"), ALIGNED)
def test_aligned_paraphrases_hit(embedder: Embedder, query: str, cached: str) -> None:
    q, c = pair(embedder, query, cached)
    comparison = compare(q, c)
    assert comparison.aligned and not comparison.vetoes
    assert match(q, c)[0] and match(c, q)[0]


UNALIGNED = [
    # the tense, or a meaning-bearing function word differs: a modal verb, "about", "be"
    ("Who was Jesus?", "Who is Jesus?"),
    ("How were fossils formed?", "How are fossils formed?"),
    ("What should I gift my husband on his birthday?",
     "What can I gift my husband on his birthday?"),
    ("How will Hillary Clinton beat Donald Trump?",
     "How can Hillary Clinton beat Donald Trump?"),
    ("How can I invest my money wisely?", "How do I invest my money wisely?"),
    ("What is this puzzle about?", "What is this puzzle?"),
    ("Why should I be studying?", "Why should I study?"),
    ("What is the smartphone with the best camera?", "Which smartphone has the best camera?"),
    # content words moved without a hinge, or a word on one side only (a category noun too)
    ("What is feeder?", "What's a feeder country?"),
    ("Which is the best distance MBA institute in India?",
     "Which is the best institute for distance MBA in India?"),
    ("How does Trump election relate to Mexican peso value?",
     "How does Trump election relate to the value of Mexican peso?"),  # "of" needs an "'s"
    ("Why do people hate Donald Trump?",
     "Why do some people hate Donald Trump and others like him?"),
    ("What is the best course after an MBA?", "What is the best course one can do in MBA?"),
    ("Does ibuprofen have Tylenol in it?", "Is ibuprofen the same as Tylenol?"),
    ("What is the difference between rice vinegar and rice wine vinegar?",
     "What are some common uses for rice vinegar and rice wine vinegar?"),
]


@pytest.mark.parametrize(("query", "cached"), UNALIGNED)
def test_unaligned_pairs_miss_at_the_default(embedder: Embedder, query: str, cached: str) -> None:
    q, c = pair(embedder, query, cached)
    comparison = compare(q, c)
    assert not comparison.vetoes and not comparison.aligned  # allowed, not a paraphrase
    assert 0.5 <= comparison.score <= 0.825 < DEFAULT_THRESHOLD
    assert not match(q, c)[0]


def at_cosine(cosine: float, dim: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors whose cosine is ``cosine`` (an embeddings endpoint's, in effect)."""
    first, second = np.zeros(dim, np.float32), np.zeros(dim, np.float32)
    first[0], second[0], second[1] = 1.0, cosine, np.sqrt(1.0 - cosine * cosine)
    return first, second


@pytest.mark.parametrize(("query", "cached"), UNALIGNED[:4])
def test_remote_vectors_open_unaligned_pairs_only_with_a_bar(embedder: Embedder, query: str,
                                                             cached: str) -> None:
    """``cache.embedder.unaligned_cosine``: unset, a pair that is not aligned misses at the
    default even at the model's cosine 1.0; set, it hits at that cosine and above, and a
    threshold above the default raises the bar by as much."""
    q, c = pair(embedder, query, cached)
    for cosine in (0.89, 0.91, 0.93, 1.0):
        first, second = at_cosine(cosine)
        rq, rc = q.with_vector(first), c.with_vector(second)
        assert not match(rq, rc)[0]
        assert similarity(rq, rc) <= 0.825
        assert match(rq, rc, unaligned_cosine=0.91)[0] == (cosine >= 0.91)
        assert match(rq, rc, threshold=0.87, unaligned_cosine=0.91)[0] == (cosine >= 0.93)
        # the table's vector on one side: the bar does not apply
        assert not match(q, rc, unaligned_cosine=0.91)[0]


@pytest.mark.parametrize(("query", "cached", "reason"), VETOED[:6])
def test_the_bar_never_lifts_a_veto(embedder: Embedder, query: str, cached: str,
                                    reason: str) -> None:
    first, second = at_cosine(1.0)
    q, c = pair(embedder, query, cached)
    rq, rc = q.with_vector(first), c.with_vector(second)
    assert compare(rq, rc, unaligned_cosine=0.5).vetoes == (reason,)
    assert not match(rq, rc, unaligned_cosine=0.5)[0]


@pytest.mark.parametrize(("query", "cached"),
                         [(q, c) for q, c, _ in VETOED] + ALIGNED + UNALIGNED)
def test_named_pairs_score_the_same_both_ways(embedder: Embedder, query: str,
                                             cached: str) -> None:
    q, c = pair(embedder, query, cached)
    forward, backward = compare(q, c, all_vetoes=True), compare(c, q, all_vetoes=True)
    assert forward.score == pytest.approx(backward.score, abs=1e-6)
    assert sorted(forward.vetoes) == sorted(backward.vetoes)
    assert forward.aligned == backward.aligned


WORDS = ("tuple", "tuples", "nested", "index", "indexes", "Paris", "paris", "the", "of", "in",
         "and", "or", "what", "is", "was", "I", "me", "my", "you", "not", "3", "IT", "it", "s",
         "best", "worst", "on", "off", "?", ",", "can", "should", "elements", "element")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=24))
def test_any_text_is_aligned_with_itself(embedder: Embedder, words: list[str]) -> None:
    fp = embedder.fingerprint(" ".join(words))
    comparison = compare(fp, fp, all_vetoes=True)
    assert comparison.aligned and not comparison.vetoes
    if fp.vector.any():
        assert comparison.score == pytest.approx(1.0, abs=1e-6)


def test_repeated_inflections_still_match_their_own_text(embedder: Embedder) -> None:
    # "tuple" and "tuples" share a key: each must still pair with its own spelling
    text = "Write a function to perform index wise addition of tuple elements in two nested tuples."
    assert match(*pair(embedder, text[:1].lower() + text[1:-1] + "?", text))[0]


# -- the score -----------------------------------------------------------------------------------

PROMPTS = [
    FRANCE, "What's France's capital?", "How do I write Go code?", "How to learn Go?",
    "Is ibuprofen safe?", "Is ibuprofen not safe?", "How can I lose weight fast?",
    "How do I lose weight quickly?", "", "???", "Explain 7 differences between TCP and UDP",
]


def test_score_is_symmetric_bounded_and_deterministic(embedder: Embedder) -> None:
    other = Embedder()  # a second instance loads the same vectors
    for a in PROMPTS:
        for b in PROMPTS:
            qa, qb = embedder.fingerprint(a), embedder.fingerprint(b)
            score = similarity(qa, qb)
            assert 0.0 <= score <= 1.0
            assert score == pytest.approx(similarity(qb, qa), abs=1e-6)
            assert score == similarity(other.fingerprint(a), other.fingerprint(b))
            assert (score >= 0.5) == guards_allow(qa, qb)
            comparison = compare(qa, qb)
            assert comparison.score == score
            assert score <= 0.825 or comparison.aligned  # only paraphrases pass 0.825


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_higher_threshold_is_stricter(embedder: Embedder, t1: float, t2: float) -> None:
    low, high = sorted((t1, t2))
    for a in PROMPTS[:8]:
        q, c = embedder.fingerprint(a), embedder.fingerprint(FRANCE)
        assert match(q, c, threshold=high)[0] <= match(q, c, threshold=low)[0]


# -- embedder and fingerprints -------------------------------------------------------------------


def test_embed_gives_unit_vectors_equal_to_fingerprints(embedder: Embedder) -> None:
    texts = [FRANCE, "What's France's capital?", ""]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-5)
    assert not vectors[2].any()  # no tokens: the zero vector
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(embedder.fingerprint(text).vector, vector, atol=1e-5)


def test_fingerprint_features(embedder: Embedder) -> None:
    fp = embedder.fingerprint("Why is the 2nd Paris museum not open, and can't I visit it?")
    assert fp.numbers == {"2"}
    assert fp.negations == {"open", "visit"}  # the content word after each negation
    assert fp.question == {"why"}
    assert fp.persons == {1}
    assert fp.words == ("paris", "museum", "open", "visit")
    assert list(fp.entity) == [True, False, False, False]
    assert fp.word_vectors.shape == (4, embedder.dim)


# -- the guards' key: the first guards without the rest of the reading ----------------------------

KEY_WORDS = (*WORDS, "Can", "you", "please", "can you", "Please can you", "Could you", "IT", "US",
             "WE", "ME", "Me", "1st", "2,000", "3.5", "twenty", "half", "versus", "&", "which",
             "whom", "no", "never", "nor", "without", "we", "us", "our", "Paris.", "it's", "A",
             "\u00b2", "\u00e9t\u00e9", "\u65e5\u672c", "I'm", "don't", "!", ":", "(", "\"",
             "ONE", "THE", "The")


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.lists(st.sampled_from(KEY_WORDS), max_size=20).map(" ".join),
    st.lists(st.sampled_from(KEY_WORDS), max_size=20).map(" ".join).map(str.upper),
    st.text(max_size=60),
))
def test_the_guard_key_read_alone_is_the_one_read_whole(text: str) -> None:
    """``read_guard_key`` (a fast path) reads the same key as ``read_text`` (what it replaces
    for the first guards), on any text as the cache normalises it and as given."""
    for variant in (text, normalize_text(text)):
        assert read_guard_key(variant) == guard_key(read_text(variant))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(KEY_WORDS), max_size=12).map(" ".join),
       st.lists(st.sampled_from(KEY_WORDS), max_size=12).map(" ".join))
def test_the_keys_veto_as_the_first_text_guards(a: str, b: str) -> None:
    fa, fb = read_text(normalize_text(a)), read_text(normalize_text(b))
    first = next((name for name, guard in TEXT_GUARDS[: len(KEYED_GUARDS)] if guard(fa, fb)), None)
    assert keyed_veto(guard_key(fa), guard_key(fb)) == first


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(KEY_WORDS), min_size=1, max_size=12).map(" ".join),
       st.lists(st.sampled_from(KEY_WORDS), min_size=1, max_size=12).map(" ".join))
def test_a_comparison_by_the_keys_is_the_one_by_every_guard(embedder: Embedder, a: str,
                                                            b: str) -> None:
    """``compare`` reads the keys first (unsettled fingerprints stay so when they veto); its
    answer is that of the guards run in full on settled fingerprints."""
    lazy, settled = pair(embedder, a, b), pair(embedder, a, b)
    for fp in settled:
        fp.settle()
    full = compare(*settled, all_vetoes=True)
    quick = compare(*lazy)
    assert quick == compare(*settled)
    assert quick.vetoes == full.vetoes[:1]
    if quick.vetoes and quick.vetoes[0] in KEYED_GUARDS:
        assert not any(fp.settled for fp in lazy)  # decided by the keys alone
    elif not quick.vetoes:
        assert quick == full


def test_normalize_text_spells_out_contractions() -> None:
    assert normalize_text("  What\u2019s  France's\ncapital? I can't  say ") == (
        "What is France's capital? I can not say"
    )


_SPACES = [c for c in map(chr, range(0x3001)) if c.isspace()]


@given(st.lists(st.sampled_from(["can", "CAN", "Can't", "won", "WON\u2019T", "cannot", "CanNot",
                                 "isn't", "what's", "a", "x", "\u00e9", "\u212a", "\uff23an",
                                 "\uff43\uff41\uff4e", *_SPACES]), max_size=10).map("".join))
def test_normalize_text_is_the_regex_spelling(text: str) -> None:
    # normalize_text skips the contraction patterns that cannot match and collapses
    # whitespace with split(): the same text as every pattern and re.sub(r"\s+", " ")
    expected = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    for pattern, repl in _CONTRACTIONS:
        expected = pattern.sub(repl, expected)
    assert normalize_text(text) == re.sub(r"\s+", " ", expected).strip()


def test_long_prompt_keeps_a_bounded_fingerprint(embedder: Embedder) -> None:
    # The per-word work is capped (64 word vectors), so a long prompt costs linear time in its
    # length; bench/cache_lookup.py measures the time itself.
    names = ["".join(chr(97 + i // 26**j % 26) for j in range(3)) for i in range(3000)]
    long = " ".join(f"Paragraph about {name} and more." for name in names)
    fp = embedder.fingerprint(long)
    assert len(fp.words) > 2900 and len(fp.word_vectors) == 64  # some are stop words
    assert match(fp, fp)[0]


def test_loads_offline_without_touching_the_network(no_network: None) -> None:
    assert Embedder().fingerprint(FRANCE).words == ("capital", "france")


def test_missing_packaged_file_fails_loudly(
    no_network: None, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    import wordllama

    monkeypatch.setattr(wordllama, "__file__", f"{tmp_path}/wordllama/__init__.py")
    with pytest.raises(RouterError, match="wordllama"):
        Embedder().embed([FRANCE])


# -- vector index --------------------------------------------------------------------------------


def unit(rng: np.random.Generator, n: int, dim: int = 32) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("exact_below", [2048, 0], ids=["exact", "hnsw"])
def test_index_add_search_remove(exact_below: int) -> None:
    vectors = unit(np.random.default_rng(0), 300)
    index = VectorIndex(32, exact_below=exact_below)
    assert index.search(vectors[0], k=3) == []
    for i, v in enumerate(vectors):
        index.add(f"k{i}", v)
    assert len(index) == 300 and "k7" in index and index.approximate == (exact_below == 0)
    for i in (0, 7, 299):
        (key, score), *_ = index.search(vectors[i], k=3)
        assert key == f"k{i}" and score == pytest.approx(1.0, abs=2e-3)
    assert index.remove("k7") and not index.remove("k7")
    assert "k7" not in index and len(index) == 299
    assert all(key != "k7" for key, _ in index.search(vectors[7], k=10))
    index.add("k7", vectors[7])  # a removed key comes back
    assert index.search(vectors[7], k=1)[0][0] == "k7"
    index.add("k0", vectors[1])  # re-adding a key replaces its vector
    assert len(index) == 300
    assert {key for key, _ in index.search(vectors[1], k=2)} == {"k0", "k1"}


def test_index_moves_into_the_graph_when_it_grows() -> None:
    vectors = unit(np.random.default_rng(1), 40)
    index = VectorIndex(32, exact_below=16)
    for i, v in enumerate(vectors):
        index.add(i, v)
        assert index.approximate == (i >= 16)
    assert [index.search(v, k=1)[0][0] for v in vectors] == list(range(40))


@pytest.mark.parametrize("exact_below", [2048, 0], ids=["exact", "hnsw"])
def test_index_leaves_out_what_scores_below_a_floor(exact_below: int) -> None:
    vectors = unit(np.random.default_rng(2), 50)
    index = VectorIndex(32, exact_below=exact_below)
    for i, v in enumerate(vectors):
        index.add(i, v)
    everything = index.search(vectors[3], k=5)
    floor = everything[2][1]
    assert index.search(vectors[3], k=5, floor=floor) == everything[:3]
    assert index.search(vectors[3], k=5, floor=1.5) == []


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 2**32 - 1), st.data())
def test_a_search_above_a_floor_is_the_top_k_cut_at_it(n: int, k: int, seed: int,
                                                      data: st.DataObject) -> None:
    """A search with a floor answers as the top ``k`` cut at the floor, ties (equal vectors)
    included."""
    rng = np.random.default_rng(seed)
    vectors = unit(rng, n, 8)
    vectors[::3] = vectors[0]  # exact ties
    query = vectors[data.draw(st.integers(0, n - 1))] if data.draw(st.booleans()) else unit(
        rng, 1, 8)[0]
    index = VectorIndex(8)
    for i, v in enumerate(vectors):
        index.add(i, v)
    scores = [float(v @ query) for v in vectors]
    floor = data.draw(st.one_of(st.sampled_from(scores), st.floats(-1.5, 1.5)))
    everything = index.search(query, k=k)  # no floor: the partition
    assert index.search(query, k=k, floor=floor) == [f for f in everything if not f[1] < floor]


def test_index_rejects_wrong_shapes() -> None:
    index = VectorIndex(4)
    with pytest.raises(ValueError, match="shape"):
        index.add("a", np.ones(3))
    with pytest.raises(ValueError, match="shape"):
        index.search(np.ones((1, 4)))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 60), st.integers(1, 8), st.integers(0, 2**32 - 1), st.data())
def test_exact_index_equals_brute_force(n: int, k: int, seed: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    vectors, query = unit(rng, n, 8), unit(rng, 1, 8)[0]
    removed = set(data.draw(st.sets(st.integers(0, n - 1), max_size=n // 2)))
    index = VectorIndex(8)
    for i, v in enumerate(vectors):
        index.add(i, v)
    for i in removed:
        index.remove(i)
    live = [i for i in range(n) if i not in removed]
    expected = sorted(live, key=lambda i: (-float(vectors[i] @ query), i))[:k]
    found = index.search(query, k=k)
    assert [s for _, s in found] == pytest.approx([float(vectors[i] @ query) for i in expected],
                                                 abs=1e-5)
    assert len(found) == min(k, len(live))


# -- vector index: the graph work deferred (a buffer searched beside the graph) ----------------


def apply_all(index: VectorIndex) -> None:
    """What the runtime's writer does with a batch, in steps of two, on this thread."""
    while (batch := index.take()) is not None:
        while not index.apply(batch, 2):
            pass
        index.commit(batch)


def test_a_deferred_index_finds_a_key_at_once_and_forgets_it_at_once() -> None:
    vectors = unit(np.random.default_rng(3), 30)
    index = VectorIndex(32, exact_below=8, deferred=True)
    for i, v in enumerate(vectors):
        index.add(i, v)
        assert index.search(v, k=1)[0][0] == i  # before any graph work
    assert not index.approximate and index.pending and len(index) == 30
    batch = index.take()
    assert batch is not None and not batch.shared and index.take() is None
    index.add(30, vectors[0])  # while the move is under way: into a new buffer
    assert index.remove(3) and 3 not in index  # in the batch taken: gone at once
    assert all(key != 3 for key, _ in index.search(vectors[3], k=30))
    index.apply(batch)
    assert {key for key, _ in index.search(vectors[0], k=2)} == {0, 30}
    index.commit(batch)
    assert index.approximate and index.buffered == 1 and len(index) == 30
    assert all(key != 3 for key, _ in index.search(vectors[3], k=30))
    index.add(5, vectors[6])  # a graph key replaced: one entry, the new vector
    assert len(index) == 30 and {key for key, _ in index.search(vectors[6], k=2)} == {5, 6}
    apply_all(index)
    assert index.buffered == 0 and not index.pending and len(index) == 30
    assert {key for key, _ in index.search(vectors[6], k=2)} == {5, 6}
    assert [index.search(v, k=1)[0][0] for v in vectors[7:29]] == list(range(7, 29))


def test_a_batch_is_committed_once_and_only_when_applied() -> None:
    index = VectorIndex(4, exact_below=0, deferred=True)
    index.add("a", np.array([1.0, 0.0, 0.0, 0.0]))
    batch = index.take()
    assert batch is not None
    with pytest.raises(ValueError, match="applied"):
        index.commit(batch)
    index.apply(batch)
    index.commit(batch)
    with pytest.raises(ValueError, match="taken"):
        index.commit(batch)
    assert index.search(np.array([1.0, 0.0, 0.0, 0.0]))[0][0] == "a"


_OPS = st.lists(st.tuples(st.sampled_from(["add", "remove", "take", "apply", "commit"]),
                          st.integers(0, 24)), max_size=80)


@settings(max_examples=60, deadline=None)
@given(_OPS, st.integers(0, 12), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_a_deferred_index_answers_as_brute_force(ops: list[tuple[str, int]], exact_below: int,
                                                 k: int, seed: int) -> None:
    """Whatever the interleaving of adds, removals and the graph work (taken in slices of 1 to
    5 vectors), a search answers as a brute-force search over the live keys (small graphs are
    searched exhaustively; scores from the graph are float16)."""
    rng = np.random.default_rng(seed)
    pool = unit(rng, 25, 8)
    queries = unit(rng, 3, 8)
    index = VectorIndex(8, exact_below=exact_below, deferred=True)
    live: dict[int, np.ndarray] = {}
    batch = None
    for op, n in ops:
        if op == "add":
            live[n] = pool[(n * 7 + len(live)) % 25]
            index.add(n, live[n])
        elif op == "remove":
            assert index.remove(n) == (live.pop(n, None) is not None)
        elif op == "take" and batch is None:
            batch = index.take(n % 5 + 1)  # small slices: a move in several batches
        elif op == "apply" and batch is not None:
            index.apply(batch, n % 3 + 1)
        elif op == "commit" and batch is not None:
            index.apply(batch)
            index.commit(batch)
            batch = None
        assert len(index) == len(live) and all(key in index for key in live)
        for query in queries:
            found = index.search(query, k=k)
            expected = sorted((float(v @ query) for v in live.values()), reverse=True)[:k]
            assert [s for _, s in found] == pytest.approx(expected, abs=2e-3)
            assert all(float(live[key] @ query) == pytest.approx(s, abs=2e-3)
                       for key, s in found)
