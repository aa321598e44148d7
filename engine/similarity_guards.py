"""The lexical side of the cache's similarity function: what a text says in its closed word
classes, and the guards that veto a pair whatever its embedding cosine. Sans-IO, pure Python.

A mean of word vectors is blind to the small words that change an answer: "how" / "why",
"is" / "was", "on page" / "off page", "India nukes Pakistan" / "Pakistan nukes India". So
:func:`read_text` splits a normalised text into content words (everything outside the closed
classes below) and per-class features, and :func:`lexical_veto` compares two texts class by
class, given which content word of one side matches which of the other (the alignment needs
the word vectors, so ``engine.similarity`` computes it).

The rule throughout: two texts may share an answer only when they carry the same meaning-
bearing function words, up to a short list of true paraphrase equivalences ("what's" = "what
is", "which" = "what", "the" = "a", "how do I" = "how can I" = "how to", "could" = "can").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["GENERIC", "TextFeatures", "aligned", "lexical_veto", "read_text", "variants"]

# Words, numbers, and the punctuation that coordinates ("A & B", "on/by", "A, B").
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?|[^\W\d_]+|[&/,]")


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


_STOP = _wordset(
    "a an the is are was were be been being am do does did done doing has have had having of "
    "in on at to for from with by about as into onto over than then and or but if so can could "
    "should would will shall may might must ought this that these those there here some any get "
    "got just very really also ever much many more such s he him his she her hers they them "
    "their theirs it its itself someone anyone one ones actually through via"
)
# Category nouns restate their head ("capital city", "anime show"), so one side lacking them
# is no evidence of a different question.
GENERIC = _wordset(
    "city cities country countries place places thing things way ways kind kinds type types "
    "show movie film series stuff"
)
_WH = {w: w for w in ("what", "how", "why", "where", "when", "who")}
_WH |= {"which": "what", "whom": "who", "whose": "who"}
# Pronouns by person; and the first person's role: "I" acts, "me" is acted on ("how do I fall
# out of love with someone" / "how can I get someone to fall out of love with me").
_PERSON = dict.fromkeys(_wordset("i me my mine myself we us our ours ourselves"), 1)
_PERSON |= dict.fromkeys(_wordset("you your yours yourself yourselves"), 2)
_ROLE = dict.fromkeys(_wordset("i we"), "agent") | dict.fromkeys(_wordset("me us"), "patient")
# "Can you ..." addresses the assistant, not a second person the answer is about. (The "I" of
# "how do I ..." is as generic as its "you", but QQP's labels say otherwise: on the dev pairs,
# treating them as one adds hits at 0.77 precision.)
_POLITE = re.compile(r"^(?:please )?(?:can|could|would|will) you\b", re.IGNORECASE)
_NEGATION = _wordset("not no never without nobody nothing none neither nor nowhere")
_NUMBER_WORDS = dict(zip(  # not "one" or "second": mostly a pronoun and a unit of time
    "zero two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty "
    "hundred thousand million billion first third half twice".split(),
    "0 2 3 4 5 6 7 8 9 10 11 12 20 30 40 50 100 1000 1e6 1e9 1 3 0.5 2".split(), strict=True))
# Modal verbs by what they ask: "how do I" and "how can I" ask the same (so "can" and bare
# do-support are one class), "should" asks for advice, "will"/"would" for a prediction,
# "may"/"might" for a possibility.
_MODAL = {"can": "", "could": "", "should": "should", "ought": "should", "must": "should",
          "will": "will", "would": "will", "shall": "will", "may": "may", "might": "may"}
_AUXILIARY = {"is": "present", "are": "present", "am": "present", "do": "present",
              "does": "present", "has": "present", "have": "present", "was": "past",
              "were": "past", "did": "past", "had": "past"}
_COORDINATORS = _wordset("and or nor vs versus & / ,")
_SPELLING = {"&": "and", "versus": "vs"}
# Function words that do not change what is asked: articles, agreement and tense forms of the
# auxiliaries (tense is the tense guard's), the possessive ("France's capital" = "the capital
# of France"), existential "there"/"some"/"any", and fillers. Every other function word is
# meaning-bearing: "how do I" / "how can I", "puzzle" / "puzzle about", "study" / "be studying".
_FREE = _wordset(
    "a an the is are am was were do does did has have had s of there some any really ever just "
    "actually very so also that , /"
)
# Prepositions count, but which one rarely matters ("comments in / on Instagram", "formula for
# / of milk", "think of / about selfies"), and "of" or the possessive can stand for any one:
# a side may not have more of them than the other has prepositions, "of" and "'s" together
# ("what is this puzzle" / "what is this puzzle about").
_PREPOSITIONS = _wordset("in on at for from with by about into onto over through via")
# Between two blocks of content words, these let the blocks trade places: "the capital of
# France" / "France's capital", "Ronaldo or Messi" / "Messi or Ronaldo".
_HINGES = _wordset("of s and or nor vs ,")
# Polar opposites: one side saying one and the other the other is a different question, even
# when the word vectors of the two are close ("best"/"worst", "on page"/"off page").
_OPPOSITES = tuple((a, b) for pair in (
    "on/off in/out up/down before/after with/without more/less more/fewer most/least "
    "best/worst better/worse good/bad same/different similar/different pros/cons for/against "
    "min/max minimum/maximum increase/decrease high/low higher/lower highest/lowest buy/sell "
    "import/export inside/outside above/below over/under top/bottom first/last start/end "
    "open/close win/lose profit/loss gain/loss advantage/disadvantage positive/negative "
    "rich/poor cheap/expensive easy/hard easy/difficult strong/weak fast/slow hot/cold "
    "big/small large/small long/short old/young old/new early/late true/false legal/illegal "
    "male/female man/woman men/women boy/girl husband/wife love/hate like/dislike "
    "agree/disagree accept/reject include/exclude add/remove introvert/extrovert past/future "
    "north/south east/west left/right light/dark success/failure always/never"
).split() for a, b in [pair.split("/")])
_SUFFIXES = (("ies", "y"), ("es", ""), ("s", ""), ("ing", ""), ("ing", "e"), ("ed", ""),
             ("ed", "e"), ("ly", ""))


def variants(word: str) -> frozenset[str]:
    """Inflection keys: two words are the same word when their keys intersect. A suffix
    stripper, not a stemmer: it only has to make "places"/"place" and "change"/"changing"
    meet; an over-merge only makes the guards a little more lenient."""
    keys = {word}
    for suffix, repl in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            keys.add(word[: -len(suffix)] + repl)
    return frozenset(keys)


def _is_entity(word: str, start: int, text: str) -> bool:
    # the character before the word, across at most one space (normalised text); "" at start
    before = text[max(0, start - 2) : start].strip()[-1:]
    capitalised = word[0].isupper() and before not in ".?!:\"'("  # "" is in any string
    return capitalised or sum(c.isupper() for c in word) >= 2 or not word.isascii()


@dataclass(frozen=True, slots=True, eq=False)
class TextFeatures:
    """What one normalised text says, by word class.

    ``words`` are the distinct content words in order of first use, with their character
    ``spans`` (first use), ``counts``, token ``positions`` (first use) and whether each looks
    like a named ``entity`` (capitalised mid-sentence, an acronym, non-Latin script). An
    acronym spelled like a function word ("IT", "US") is a content word.
    """

    numbers: frozenset[str]
    negations: frozenset[str]  # the content word after each negation ("" at the end)
    question: frozenset[str]  # question words, "which" folded into "what"
    persons: frozenset[int]  # 1 and/or 2: first and second person pronouns
    roles: frozenset[str]  # "agent" (I, we) and/or "patient" (me, us)
    modals: frozenset[str]  # modal classes; "can" and do-support are the class ""
    tense: str  # of the first auxiliary: "present", "past" or ""
    all_keys: frozenset[str]  # inflection keys of every word, function words included
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    counts: tuple[int, ...]
    positions: tuple[int, ...]
    entity: tuple[bool, ...]
    coordinators: tuple[int, ...]  # token positions of "and", "or", "vs", "&", "/", ","
    tokens: tuple[str, ...]  # every token, lower case ("&" spelled "and")
    function_words: frozenset[str]  # meaning-bearing function words, prepositions aside
    prepositions: int  # how many, "of" and the possessive "'s" aside
    possessives: int  # how many "of" and "'s"
    keys: tuple[frozenset[str], ...]
    key_set: frozenset[str]


def read_text(text: str) -> TextFeatures:
    """The :class:`TextFeatures` of a normalised ``text``."""
    numbers: set[str] = set()
    question: set[str] = set()
    persons: set[int] = set()
    roles: set[str] = set()
    modals: set[str] = set()
    tense = ""
    lowered: set[str] = set()
    tokens: list[str] = []
    function_words: set[str] = set()
    prepositions = possessives = 0
    negation_at: list[int] = []
    coordinators: list[int] = []
    order: list[str] = []
    first: dict[str, tuple[int, int, int, bool]] = {}  # span, position, entity
    counts: dict[str, int] = {}
    polite = _POLITE.match(text)
    shouting = sum(c.isupper() for c in text) > sum(c.islower() for c in text)
    for position, m in enumerate(_TOKEN.finditer(text)):
        raw, word = m.group(), m.group().lower()
        word = _SPELLING.get(word, word)
        lowered.add(word)
        tokens.append(word)
        acronym = len(raw) > 1 and raw.isupper() and not shouting
        if word in _COORDINATORS:
            coordinators.append(position)
            if word not in _FREE:
                function_words.add(word)
        elif word[0].isdigit():
            numbers.add(re.sub(r"(st|nd|rd|th)$", "", word.replace(",", "")))
        elif word in _NUMBER_WORDS:
            numbers.add(_NUMBER_WORDS[word])
        elif word in _WH:
            question.add(_WH[word])
        elif word in _NEGATION:
            negation_at.append(len(order))
        elif word in _PERSON and not acronym:
            if not (polite and m.start() < polite.end()):
                persons.add(_PERSON[word])
                if word in _ROLE:
                    roles.add(_ROLE[word])
        elif word in _STOP and not acronym:
            if word in _PREPOSITIONS:
                prepositions += 1
            elif word in ("of", "s"):
                possessives += 1
            elif word not in _FREE:
                function_words.add(word)
            if word in _MODAL:
                modals.add(_MODAL[word])
            if not tense and word in _AUXILIARY:
                tense = _AUXILIARY[word]
            if not tense and word in _MODAL:
                tense = "modal"
        else:
            order.append(word)
            counts[word] = counts.get(word, 0) + 1
            start, end, at, entity = first.get(word, (*m.span(), position, False))
            entity = entity or acronym or _is_entity(raw, m.start(), text)
            first[word] = (start, end, at, entity)
    modals.discard("")
    keys = tuple(variants(w) for w in first)
    return TextFeatures(
        numbers=frozenset(numbers),
        negations=frozenset(order[i] if i < len(order) else "" for i in negation_at),
        question=frozenset(question),
        persons=frozenset(persons),
        roles=frozenset(roles),
        modals=frozenset(modals),
        tense=tense,
        all_keys=frozenset().union(*(variants(w) for w in lowered)),
        words=tuple(first),
        spans=tuple((v[0], v[1]) for v in first.values()),
        counts=tuple(counts.values()),
        positions=tuple(v[2] for v in first.values()),
        entity=tuple(v[3] for v in first.values()),
        coordinators=tuple(coordinators),
        tokens=tuple(tokens),
        function_words=frozenset(function_words),
        prepositions=prepositions,
        possessives=possessives,
        keys=keys,
        key_set=frozenset().union(*keys),
    )


# -- guards -------------------------------------------------------------------------------------


def _opposed(a: TextFeatures, b: TextFeatures) -> bool:
    """One side says ``x`` where the other says its opposite ``y``."""
    ka, kb = a.all_keys, b.all_keys
    for x, y in _OPPOSITES:
        if (x in ka and y not in ka and y in kb and x not in kb) or (
            y in ka and x not in ka and x in kb and y not in kb
        ):
            return True
    return False


_ORDER_WINDOW = 64  # matched words checked for swapped roles


def _swapped(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int]) -> bool:
    """Two words trade places around a third ("India nukes Pakistan" / "Pakistan nuked India",
    "are introverts more successful than extroverts" / the reverse): three matched content
    words in a row on one side stand in reverse order, again in a row, on the other, with no
    coordinator between the outer two ("Ronaldo or Messi" / "Messi or Ronaldo" is the same
    question). Phrases that move whole ("for aerospace in India" / "in India for aerospace")
    leave no such triple."""
    pairs = sorted((a.positions[i], b.positions[j]) for i, j in enumerate(a_to_b) if j >= 0)
    pairs = pairs[:_ORDER_WINDOW]
    rank = {bp: r for r, bp in enumerate(sorted({bp for _, bp in pairs}))}
    for (ax, bx), (_, bv), (ay, by) in zip(pairs, pairs[1:], pairs[2:], strict=False):
        if not rank[bx] == rank[bv] + 1 == rank[by] + 2:
            continue
        if not any(ax < c < ay for c in a.coordinators) and not any(
                by < c < bx for c in b.coordinators):
            return True
    return False


def _order_compatible(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int]) -> bool:
    """The matched content words come in the same order on both sides, or one block of them
    trades places with the next across a hinge ("of", the possessive, a coordinator) on either
    side: "the capital of France" / "France's capital city", "Ronaldo or Messi" / "Messi or
    Ronaldo"; not "institute for distance MBA" / "distance MBA institute"."""
    pairs = sorted((a.positions[i], b.positions[j]) for i, j in enumerate(a_to_b) if j >= 0)
    at = [p for p, _ in pairs]
    bt = [p for _, p in pairs]
    descents = [d for d in range(len(bt) - 1) if bt[d] > bt[d + 1]]
    if not descents:
        return True
    if len(descents) > 1:
        return False
    j = descents[0] + 1  # blocks bt[i:j] and bt[j:k] trade places
    i = next(n for n in range(j) if bt[n] > bt[j])
    k = next((n for n in range(j, len(bt)) if bt[n] > bt[j - 1]), len(bt))
    if bt[:i] + bt[j:k] + bt[i:j] + bt[k:] != sorted(bt):
        return False
    return any(t in _HINGES for t in a.tokens[at[j - 1] + 1 : at[j]]) or any(
        t in _HINGES for t in b.tokens[bt[k - 1] + 1 : bt[i]])


def aligned(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int],
            b_to_a: Sequence[int]) -> bool:
    """Whether ``a`` and ``b`` say the same thing word for word, up to inflection, spelling,
    free function words and one hinged swap: every content word has a counterpart (category
    nouns such as "city" excepted), the meaning-bearing function words are the same, and the
    order is compatible (:func:`_order_compatible`)."""
    if a.function_words != b.function_words:
        return False
    if a.prepositions > b.prepositions + b.possessives or (
            b.prepositions > a.prepositions + a.possessives):
        return False
    for x, x_to_y in ((a, a_to_b), (b, b_to_a)):
        if any(j < 0 and x.words[i] not in GENERIC for i, j in enumerate(x_to_y)):
            return False
    return _order_compatible(a, b, a_to_b)


def _entity_unmatched(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int],
                      b_to_a: Sequence[int]) -> bool:
    return any(j < 0 and a.entity[i] for i, j in enumerate(a_to_b)) or any(
        j < 0 and b.entity[i] for i, j in enumerate(b_to_a))


def _repeated(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int]) -> bool:
    """A phrase said twice on one side only ("is it good to be bad or bad to be good" / "is it
    bad to be good"): two or more content words whose counts differ. One repeated word is
    mostly ellipsis ("hot water heavier than cold water" / "than cold")."""
    return sum(j >= 0 and a.counts[i] != b.counts[j] for i, j in enumerate(a_to_b)) >= 2


Guard = Callable[[TextFeatures, TextFeatures, Sequence[int], Sequence[int]], bool]
GUARDS: tuple[tuple[str, Guard], ...] = (
    ("number", lambda a, b, ab, ba: a.numbers != b.numbers),
    ("negation", lambda a, b, ab, ba: a.negations != b.negations),
    ("question", lambda a, b, ab, ba: a.question != b.question),
    ("person", lambda a, b, ab, ba: a.persons != b.persons),
    ("role", lambda a, b, ab, ba: a.roles != b.roles),
    ("modal", lambda a, b, ab, ba: a.modals != b.modals),
    ("tense", lambda a, b, ab, ba: {a.tense, b.tense} == {"present", "past"}),
    ("opposite", lambda a, b, ab, ba: _opposed(a, b)),
    ("entity", _entity_unmatched),
    ("repeat", lambda a, b, ab, ba: _repeated(a, b, ab)),
    ("order", lambda a, b, ab, ba: _swapped(a, b, ab)),
)


def lexical_veto(a: TextFeatures, b: TextFeatures, a_to_b: Sequence[int],
                 b_to_a: Sequence[int]) -> str | None:
    """Why ``a`` and ``b`` are different questions whatever their cosine, or None.

    ``a_to_b[i]`` is the index of the content word of ``b`` that matches ``a.words[i]``, or
    -1; ``b_to_a`` likewise. Unmatched content words are the caller's business (they cost
    score by salience), except named entities, which veto here.
    """
    for name, guard in GUARDS:
        if guard(a, b, a_to_b, b_to_a):
            return name
    return None
