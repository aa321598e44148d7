"""The lexical half of the cache's similarity function: what a text says in its closed word
classes, the guards that veto a pair whatever its cosine, and the test for a word-for-word
paraphrase. Sans-IO, pure Python; ``engine.core.cache.similarity`` adds the vectors.

A sum of word vectors is blind to the small words that change an answer: "how" / "why", "is" /
"was", "on page" / "off page", "India nukes Pakistan" / "Pakistan nuked India". So
:func:`read_text` splits a normalised text into content words (everything outside the closed
classes below) and per-class features. Two texts are then compared in two steps:

* the guards (:data:`TEXT_GUARDS` on the two texts, then :data:`ALIGNED_GUARDS` once the
  caller knows which content word of one side matches which of the other) name a difference
  that makes them different questions: a number, a negation, a question word, a person or the
  role of "I" / "me", a polar opposite, an unmatched named entity, a repeated phrase, two
  words trading places around a third;
* :func:`aligned` asks for more: the same tense, the same content words, the same
  meaning-bearing function words (modal verbs included; up to the free ones: "the" = "a", "is" =
  "are", fillers, and any preposition for another), in the same order up to one swap across a
  hinge ("the capital of France" / "France's capital"). Only aligned pairs can reach the default
  threshold; see ``engine.core.cache.similarity``.

Word lists are closed classes of English and general antonym pairs, not tuned to single pairs.
"""

from __future__ import annotations

import functools
import marshal
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import pairwise
from typing import Any

__all__ = ["ALIGNED_GUARDS", "KEYED_GUARDS", "TEXT_GUARDS", "GuardKey", "TextFeatures", "aligned",
           "guard_key", "keyed_veto", "pack_features", "read_guard_key", "read_text", "unmatched",
           "unpack_features"]

# Words, numbers, the punctuation that coordinates ("A & B", "on/by", "A, B") and the one that
# ends a sentence.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?|[^\W\d_]+|[&/,]|[.?!;:]+")
_ORDINAL = re.compile(r"(st|nd|rd|th)$")


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


# -- lexicon: closed word classes; everything else is a content word ----------------------------

_STOP = _wordset(
    "a an the is are was were be been being am do does did done doing has have had having of "
    "in on at to for from with by about as into onto over through via than then and or but if "
    "so can could should would will shall may might must ought this that these those there here "
    "some any get got just very really actually also ever much many more such s he him his she "
    "her hers they them their theirs it its itself someone anyone one ones"
)
_WH = {w: w for w in ("what", "how", "why", "where", "when", "who")}
_WH |= {"which": "what", "whom": "who", "whose": "who"}
# Pronouns by person, and the role of the first person: "I" acts, "me" is acted on ("how do I
# fall out of love with someone" / "how can I get someone to fall out of love with me").
_PERSON = dict.fromkeys(_wordset("i me my mine myself we us our ours ourselves"), 1)
_PERSON |= dict.fromkeys(_wordset("you your yours yourself yourselves"), 2)
_ROLE = dict.fromkeys(_wordset("i we"), "agent") | dict.fromkeys(_wordset("me us"), "patient")
# "Can you ..." addresses the assistant: its words are skipped. (The "I" of "how do I ..." is
# as generic as its "you", but QQP's labels disagree: on the dev pairs, merging the two adds
# hits at 0.77 precision.)
_POLITE = re.compile(r"^(?:please )?(?:can|could|would|will) you\b", re.IGNORECASE)
_NEGATION = _wordset("not no never without nobody nothing none neither nor nowhere")
_NUMBER_WORDS = dict(zip(  # not "one" or "second": mostly a pronoun and a unit of time
    "zero two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty "
    "hundred thousand million billion first third half twice".split(),
    "0 2 3 4 5 6 7 8 9 10 11 12 20 30 40 50 100 1000 1e6 1e9 1 3 0.5 2".split(), strict=True))
# The tense of a question is that of its first auxiliary ("who is" / "who was"); modal verbs
# ("can", "should", "will"...) are meaning-bearing function words of their own.
_TENSE = dict.fromkeys(_wordset("is are am do does has have"), "present")
_TENSE |= dict.fromkeys(_wordset("was were did had"), "past")
_TENSE |= dict.fromkeys(_wordset("can could should would will shall may might must ought"), "modal")
_COORDINATORS = _wordset("and or vs / ,")  # "nor" is a negation
_SPELLING = {"&": "and", "versus": "vs"}
# Function words that do not change what is asked: articles, agreement forms (the tense is
# compared on its own), existential "there" / "some" / "any", relative "that", fillers. Every
# other function word bears meaning: "how do I" / "how can I", "be studying" / "study".
_FREE = _wordset(
    "a an the is are am was were do does did has have had there some any that really ever just "
    "actually very so also , /"
)
# Which preposition rarely matters ("comments in / on Instagram", "formula for / of milk"),
# but how many does ("what is this puzzle" / "what is this puzzle about"). "Of" and the
# possessive "'s" can stand for any preposition or for none ("the capital of France" /
# "France's capital").
_PREPOSITIONS = _wordset("in on at for from with by about into onto over through via")
_POSSESSIVES = _wordset("of s")
# Two blocks of content words may trade places across a coordinator or a sentence end on
# either side ("Ronaldo or Messi" / "Messi or Ronaldo", "what are solids? what are some
# examples?" / "what are some examples of solids?"), or across "of" on one side and the
# possessive on the other ("the capital of France" / "France's capital"); not across "of"
# alone: a noun compound can mean something else ("the language of the body" / "body
# language").
_HINGES = _wordset("and or vs ,")
_SENTENCE_ENDS = ".?!;:"


def _opposites(pairs: str) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for pair in pairs.split():
        x, y = pair.split("/")
        out.setdefault(x, set()).add(y)
        out.setdefault(y, set()).add(x)
    return {word: frozenset(opposites) for word, opposites in out.items()}


# Polar opposites: one side saying one and the other the other is a different question, even
# when their word vectors are close ("best" / "worst", "on page" / "off page").
_OPPOSITE_OF = _opposites(
    "on/off in/out up/down before/after more/less more/fewer most/least best/worst "
    "better/worse good/bad same/different similar/different similar/differ pros/cons "
    "for/against min/max minimum/maximum increase/decrease high/low higher/lower "
    "highest/lowest buy/sell import/export inside/outside above/below over/under top/bottom "
    "first/last start/end open/close win/lose profit/loss gain/loss advantage/disadvantage "
    "positive/negative rich/poor cheap/expensive easy/hard easy/difficult strong/weak "
    "fast/slow hot/cold big/small large/small long/short old/young old/new early/late "
    "true/false legal/illegal male/female man/woman men/women boy/girl husband/wife love/hate "
    "like/dislike agree/disagree accept/reject include/exclude add/remove introvert/extrovert "
    "past/future north/south east/west left/right light/dark success/failure"
)
_SUFFIXES = (("ies", "y"), ("es", ""), ("s", ""), ("ing", ""), ("ing", "e"), ("ed", ""),
             ("ed", "e"), ("ly", ""))


@functools.lru_cache(maxsize=8192)  # a pure function of the word, asked once per use
def _variants(word: str) -> frozenset[str]:
    """Inflection keys: two words are the same word when their keys intersect. A suffix
    stripper, not a stemmer: it only has to make "places"/"place" and "change"/"changing"
    meet; an over-merge only makes the comparison a little more lenient."""
    keys = {word}
    for suffix, repl in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            keys.add(word[: -len(suffix)] + repl)
    return frozenset(keys)


def _is_entity(word: str, start: int, text: str) -> bool:
    # the character before the word, across at most one space (normalised text); "" at start
    before = text[max(0, start - 2) : start].strip()[-1:]
    capitalised = word[0].isupper() and before not in ".?!:\"'("  # "" is in any string
    return capitalised or sum(map(str.isupper, word)) >= 2 or not word.isascii()


# -- what a text says ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class TextFeatures:
    """What one normalised text says, by word class.

    ``words`` are the distinct content words in order of first use, with the character
    ``spans`` and token ``positions`` of that first use, their ``counts``, their inflection
    ``keys`` and whether each looks like a named ``entity`` (capitalised mid-sentence, an
    acronym, non-Latin script). An acronym spelled like a function word ("IT", "US") is a
    content word and an entity; in a text without small letters, capitals mark nothing.
    """

    numbers: frozenset[str]
    negations: frozenset[str]  # the content word after each negation ("" at the end)
    question: frozenset[str]  # question words, "which" folded into "what"
    persons: frozenset[int]  # 1 and/or 2: first and second person pronouns
    roles: frozenset[str]  # "agent" (I, we) and/or "patient" (me, us)
    tense: str  # of the first auxiliary or modal: "present", "past", "modal" or ""
    polar: frozenset[str]  # words that have a polar opposite
    function_words: frozenset[str]  # meaning-bearing ones, prepositions aside
    prepositions: int  # how many, "of" and "'s" aside
    possessives: int  # how many "of" and "'s"
    tokens: tuple[str, ...]  # every token, lower case, "&" spelled "and"
    coordinators: tuple[int, ...]  # token positions of "and" ("&"), "or", "vs", "/", ","
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    positions: tuple[int, ...]
    counts: tuple[int, ...]
    entity: tuple[bool, ...]
    keys: tuple[frozenset[str], ...]
    word_index: Mapping[str, int]  # word -> its index in ``words``
    first_with_key: Mapping[str, int]  # inflection key -> index of the first word with it


_FIELDS = tuple(f.name for f in fields(TextFeatures))


def pack_features(features: TextFeatures) -> bytes:
    """``features`` as one ``bytes`` (``marshal``: sets, tuples, dicts, strings and numbers,
    all it holds). A cache keeps them so: a few dozen sets and tuples per entry, each an
    object the cyclic collector would walk on every full collection, become one it never
    tracks."""
    return marshal.dumps(tuple(getattr(features, name) for name in _FIELDS))


def unpack_features(packed: bytes) -> TextFeatures:
    """The :class:`TextFeatures` :func:`pack_features` packed."""
    return TextFeatures(*marshal.loads(packed))


def _number(token: str) -> str:
    """A number as the number guard compares it: "1,000" is "1000", "2nd" is "2"."""
    return _ORDINAL.sub("", token.replace(",", ""))


def read_text(text: str) -> TextFeatures:
    """The :class:`TextFeatures` of a normalised text (``engine.similarity.normalize_text``)."""
    numbers: set[str] = set()
    question: set[str] = set()
    persons: set[int] = set()
    roles: set[str] = set()
    function_words: set[str] = set()
    polar: set[str] = set()
    tense = ""
    prepositions = possessives = 0
    tokens: list[str] = []
    coordinators: list[int] = []
    negation_at: list[int] = []
    order: list[str] = []  # content words, every use
    first: dict[str, tuple[int, int, int, bool]] = {}  # span, position, entity
    counts: dict[str, int] = {}
    polite = _POLITE.match(text)
    shouting = text.isupper()  # no small letter: capitals mark nothing
    for m in _TOKEN.finditer(text):
        if polite and m.start() < polite.end():
            continue
        raw = m.group()
        word = raw.lower()
        word = _SPELLING.get(word, word)
        position = len(tokens)
        tokens.append(word)
        if word[0] in _SENTENCE_ENDS:
            continue
        acronym = len(raw) > 1 and raw.isupper() and not shouting
        if word in _OPPOSITE_OF:  # content words: by inflection key, below
            polar.add(word)
        if word in _COORDINATORS:
            coordinators.append(position)
            if word not in _FREE:
                function_words.add(word)
        elif word[0].isdigit():
            numbers.add(_number(word))
        elif word in _NUMBER_WORDS:
            numbers.add(_NUMBER_WORDS[word])
        elif word in _WH:
            question.add(_WH[word])
        elif word in _NEGATION:
            negation_at.append(len(order))
        elif word in _PERSON and not acronym:
            persons.add(_PERSON[word])
            if word in _ROLE:
                roles.add(_ROLE[word])
        elif word in _STOP and not acronym:
            tense = tense or _TENSE.get(word, "")
            if word in _PREPOSITIONS:
                prepositions += 1
            elif word in _POSSESSIVES:
                possessives += 1
            elif word not in _FREE:
                function_words.add(word)
        else:
            order.append(word)
            counts[word] = counts.get(word, 0) + 1
            start, end, at, entity = first.get(word, (*m.span(), position, False))
            entity = entity or acronym or (not shouting and _is_entity(raw, m.start(), text))
            first[word] = (start, end, at, entity)
    keys = tuple(_variants(w) for w in first)
    first_with_key: dict[str, int] = {}
    for i, word_keys in enumerate(keys):
        for key in word_keys:
            first_with_key.setdefault(key, i)
    polar.update(k for k in first_with_key if k in _OPPOSITE_OF)
    return TextFeatures(
        numbers=frozenset(numbers),
        negations=frozenset(order[i] if i < len(order) else "" for i in negation_at),
        question=frozenset(question),
        persons=frozenset(persons),
        roles=frozenset(roles),
        tense=tense,
        polar=frozenset(polar),
        function_words=frozenset(function_words),
        prepositions=prepositions,
        possessives=possessives,
        tokens=tuple(tokens),
        coordinators=tuple(coordinators),
        words=tuple(first),
        spans=tuple((v[0], v[1]) for v in first.values()),
        positions=tuple(v[2] for v in first.values()),
        counts=tuple(counts.values()),
        entity=tuple(v[3] for v in first.values()),
        keys=keys,
        word_index={word: i for i, word in enumerate(first)},
        first_with_key=first_with_key,
    )


# -- the guards' key: the first text guards, read alone ------------------------------------------

GuardKey = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[int, ...],
                 tuple[str, ...]]
"""A text's numbers, negations, question words, persons and roles, each sorted: what the
:data:`KEYED_GUARDS` compare. Two texts' keys differ in a place exactly when that guard vetoes
the pair."""


def guard_key(features: TextFeatures) -> GuardKey:
    """The :data:`GuardKey` of a text already read."""
    return (tuple(sorted(features.numbers)), tuple(sorted(features.negations)),
            tuple(sorted(features.question)), tuple(sorted(features.persons)),
            tuple(sorted(features.roles)))


# read_guard_key's classes: each closed-class word (as spelled in a text, lower-cased) to what
# read_text makes of it, in read_text's order of tests (a later class overrides an earlier).
_SKIP, _NUMBER, _QUESTION, _NEGATING, _PERSONAL, _FUNCTION = range(6)
_KEY_CLASS: dict[str, tuple[int, Any]] = {}
_KEY_CLASS |= {word: (_FUNCTION, None) for word in _STOP}
_KEY_CLASS |= {word: (_PERSONAL, person) for word, person in _PERSON.items()}
_KEY_CLASS |= dict.fromkeys(_NEGATION, (_NEGATING, None))
_KEY_CLASS |= {word: (_QUESTION, wh) for word, wh in _WH.items()}
_KEY_CLASS |= {word: (_NUMBER, number) for word, number in _NUMBER_WORDS.items()}
_KEY_CLASS |= dict.fromkeys(_COORDINATORS, (_SKIP, None))
_KEY_CLASS |= {spelled: _KEY_CLASS[word] for spelled, word in _SPELLING.items()
               if word in _KEY_CLASS}


def read_guard_key(text: str) -> GuardKey:
    """``guard_key(read_text(text))``, reading only what the key needs: the same tokens,
    classed as :func:`read_text` classes them, without the content words' spans, entities,
    counts and inflection keys. Most pairs a cache compares are told apart here (templated
    questions by their number, real ones by a question word, a person or a number half the
    time), so a query read this way is often never read whole; about a third of the cost of
    :func:`read_text`."""
    numbers: set[str] = set()
    question: set[str] = set()
    persons: set[int] = set()
    roles: set[str] = set()
    negation_at: list[int] = []
    order: list[str] = []  # content words, every use
    polite = _POLITE.match(text)
    shouting = text.isupper()
    # the polite frame ends at a word's end, so the tokens after it are those read_text keeps
    for raw in _TOKEN.findall(text, polite.end() if polite else 0):
        word = raw.lower()
        found = _KEY_CLASS.get(word)
        if found is None:  # a content word, a number or a sentence end
            if word[0] in _SENTENCE_ENDS:
                continue
            if word[0].isdigit():
                numbers.add(_number(word))
            else:
                order.append(word)
            continue
        kind, value = found
        if kind == _NUMBER:
            numbers.add(value)
        elif kind == _QUESTION:
            question.add(value)
        elif kind == _NEGATING:
            negation_at.append(len(order))
        elif kind != _SKIP:  # a pronoun or a function word, unless an acronym ("IT", "US")
            if len(raw) > 1 and raw.isupper() and not shouting:
                order.append(word)
            elif kind == _PERSONAL:
                persons.add(value)
                if word in _ROLE:
                    roles.add(_ROLE[word])
    negations = {order[i] if i < len(order) else "" for i in negation_at}
    return (tuple(sorted(numbers)), tuple(sorted(negations)), tuple(sorted(question)),
            tuple(sorted(persons)), tuple(sorted(roles)))


def unmatched(a: TextFeatures, a_to_b: Sequence[int]) -> list[int]:
    """Indices of ``a``'s content words without a counterpart. Every content word counts:
    letting category nouns ("city", "show") go unmatched was tried on the design split of
    the dev pairs (``engine.training.cache_split``) and bought no true hit there, only a false
    one ("what is feeder" / "what is a feeder country")."""
    return [i for i, j in enumerate(a_to_b) if j < 0]


# -- guards -------------------------------------------------------------------------------------


def _opposed(a: TextFeatures, b: TextFeatures) -> bool:
    """One side says ``x`` where the other says its opposite ``y`` (and neither says both)."""
    return any(y in b.polar and y not in a.polar and x not in b.polar
               for x in a.polar for y in _OPPOSITE_OF[x])


def _entity_unmatched(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int],
                      b_to_a: Sequence[int]) -> bool:
    return any(j < 0 and a.entity[i] for i, j in enumerate(a_to_b)) or any(
        j < 0 and b.entity[i] for i, j in enumerate(b_to_a))


def _count_mismatches(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int]) -> int:
    """How many of ``b``'s matched words are used a different number of times in ``a`` (all
    the ``a`` words matching one ``b`` word counted together: "language" and "languages")."""
    uses: dict[int, int] = {}
    for i, j in enumerate(a_to_b):
        if j >= 0:
            uses[j] = uses.get(j, 0) + a.counts[i]
    return sum(n != b.counts[j] for j, n in uses.items())


def _repeated(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int],
              b_to_a: Sequence[int]) -> bool:
    """A phrase said twice on one side only ("is it good to be bad or bad to be good" / "is it
    bad to be good"): two or more content words whose counts differ. One repeated word is
    mostly ellipsis ("heavier than cold water" / "than cold")."""
    return max(_count_mismatches(a, b, a_to_b), _count_mismatches(b, a, b_to_a)) >= 2


def _matched_positions(a: TextFeatures, b: TextFeatures,
                       a_to_b: Sequence[int]) -> list[tuple[int, int]]:
    """(position in ``a``, position in ``b``) of each matched content word, in ``a``'s order."""
    return sorted((a.positions[i], b.positions[j]) for i, j in enumerate(a_to_b) if j >= 0)


def _swapped(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int],
             b_to_a: Sequence[int]) -> bool:
    return _swapped_from(a, b, a_to_b) or _swapped_from(b, a, b_to_a)


def _swapped_from(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int]) -> bool:
    """Two words trade places around a third ("India nukes Pakistan" / "Pakistan nuked
    India", "are introverts more successful than extroverts" / the reverse): three matched
    content words in a row on one side stand in reverse order, again in a row, on the other,
    with no coordinator between the outer two ("Ronaldo or Messi" / "Messi or Ronaldo")."""
    pairs = _matched_positions(a, b, a_to_b)
    if all(p[1] <= q[1] for p, q in pairwise(pairs)):
        return False  # the common case: nothing moved
    rank = {bp: r for r, bp in enumerate(sorted({bp for _, bp in pairs}))}
    for (ax, bx), (_, bv), (ay, by) in zip(pairs, pairs[1:], pairs[2:], strict=False):
        if rank[bx] == rank[bv] + 1 == rank[by] + 2 and not any(
                ax < c < ay for c in a.coordinators) and not any(
                by < c < bx for c in b.coordinators):
            return True
    return False


TextGuard = Callable[[TextFeatures, TextFeatures], bool]
AlignedGuard = Callable[[TextFeatures, TextFeatures, Sequence[int], Sequence[int]], bool]
TEXT_GUARDS: tuple[tuple[str, TextGuard], ...] = (
    ("number", lambda a, b: a.numbers != b.numbers),  # "3 items" / "4 items"
    ("negation", lambda a, b: a.negations != b.negations),  # "is X safe" / "is X not safe"
    ("question", lambda a, b: a.question != b.question),  # "how" / "where"
    ("person", lambda a, b: a.persons != b.persons),  # "your predictions" / "some predictions"
    ("role", lambda a, b: a.roles != b.roles),  # "fall out of love" / "... with me"
    ("opposite", _opposed),  # "on page" / "off page", "same" / "different"
)
"""Guards on the two texts alone, cheapest first: (reason, predicate)."""
KEYED_GUARDS = ("number", "negation", "question", "person", "role")
"""The first :data:`TEXT_GUARDS`, those a :data:`GuardKey` decides."""
if tuple(name for name, _ in TEXT_GUARDS[: len(KEYED_GUARDS)]) != KEYED_GUARDS:
    raise ImportError("KEYED_GUARDS must be the first of TEXT_GUARDS, in their order")


def keyed_veto(a: GuardKey, b: GuardKey) -> str | None:
    """The first of :data:`KEYED_GUARDS` that vetoes a pair with these keys, or None: the
    first of :data:`TEXT_GUARDS` to veto it, if one of these does."""
    if a == b:
        return None
    return next(name for name, x, y in zip(KEYED_GUARDS, a, b, strict=True) if x != y)
ALIGNED_GUARDS: tuple[tuple[str, AlignedGuard], ...] = (
    ("entity", _entity_unmatched),  # "capital of France" / "of Germany", "IT leadership"
    ("repeat", _repeated),  # "... to atheist to devout Christian" / "... to atheist"
    ("order", _swapped),  # "India nukes Pakistan" / "Pakistan nuked India"
)
"""Guards that need the word alignment, ``a_to_b[i]`` being the index of ``b``'s content word
that matches ``a.words[i]`` (or -1), ``b_to_a`` likewise: (reason, predicate)."""


# -- word-for-word paraphrase -------------------------------------------------------------------


def _is_hinge(token: str) -> bool:
    return token in _HINGES or token[0] in _SENTENCE_ENDS


def _order_compatible(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int]) -> bool:
    """The matched content words come in the same order on both sides, or one block of them
    trades places with the next across a hinge (see :data:`_HINGES`): "the capital of France"
    / "France's capital", "Ronaldo or Messi" / "Messi or Ronaldo"; not "the value of the peso"
    / "the peso value", nor "institute for distance MBA" / "distance MBA institute"."""
    pairs = _matched_positions(a, b, a_to_b)
    at, bt = [p for p, _ in pairs], [p for _, p in pairs]
    descents = [d + 1 for d in range(len(bt) - 1) if bt[d] > bt[d + 1]]
    if not descents:
        return True
    if len(descents) > 1:
        return False
    j = descents[0]  # blocks bt[i:j] and bt[j:k] trade places
    i = next(n for n in range(j) if bt[n] > bt[j])
    k = next((n for n in range(j, len(bt)) if bt[n] > bt[j - 1]), len(bt))
    if bt[:i] + bt[j:k] + bt[i:j] + bt[k:] != sorted(bt):
        return False
    between_a = a.tokens[at[j - 1] + 1 : at[j]]  # where the blocks meet in a ...
    between_b = b.tokens[bt[k - 1] + 1 : bt[i]]  # ... and in b
    return any(_is_hinge(t) for t in between_a + between_b) or (
        "of" in between_a and "s" in between_b) or ("s" in between_a and "of" in between_b)


def aligned(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int],
            b_to_a: Sequence[int]) -> bool:
    """Whether ``a`` and ``b`` say the same thing word for word: the same tense ("who is" /
    "who was" are not), the same meaning-bearing function words ("how do I" / "how can I",
    "what can I gift" / "what should I gift" are not), as many prepositions (one side's "of"
    and "'s" may stand in), every content word with a counterpart, and
    a compatible order (:func:`_order_compatible`). Spelling, inflection and the free function
    words (:data:`_FREE`) may differ."""
    return (
        {a.tense, b.tense} != {"present", "past"}
        and a.function_words == b.function_words
        and a.prepositions <= b.prepositions + b.possessives
        and b.prepositions <= a.prepositions + a.possessives
        and not unmatched(a, a_to_b)
        and not unmatched(b, b_to_a)
        and _order_compatible(a, b, a_to_b)
        and _order_compatible(b, a, b_to_a)
    )
