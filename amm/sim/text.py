"""Token counting and the simulator's answers: good (on-topic) or bad (filler).

Both are cheap (tens of microseconds) and deterministic given the RNG they are
handed, so a seeded simulator answers the same prompt the same way every run.

>>> count_tokens("Hello, world!")
4
"""

from __future__ import annotations

import keyword
import random
import re

__all__ = ["count_tokens", "generate_text", "key_terms", "split_tokens", "truncate_tokens",
           "wants_code"]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]{3,}")
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+(.+?)\s*$", re.MULTILINE)
_CODE_ASK = re.compile(r"\b(?:code|function|implement\w*|python|class)\b", re.IGNORECASE)

# Words that carry no topic; leaving them out makes the "key terms" the prompt's nouns.
_STOPWORD_TEXT = """
    about above after again against also because been before being below between both
    could does doing down during each explain from further have having here into just
    more most other over please same should some such than that their them then there
    these they this those through under until very what when where which while whom
    with would write your yours give list tell describe answer following using make
    code function implement python class"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_FILLER = (
    "the weather", "a long story", "many things", "the general idea", "some people",
    "the usual way", "various factors", "in a sense", "the other day", "more or less",
)


def count_tokens(text: str) -> int:
    """Tokens in ``text``: words and punctuation marks (``\\w+|[^\\w\\s]``)."""
    return len(_TOKEN.findall(text))


def truncate_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """``text`` cut after its first ``max_tokens`` tokens, and whether it was cut."""
    if max_tokens <= 0:
        return "", bool(text.strip())
    for i, match in enumerate(_TOKEN.finditer(text), start=1):
        if i == max_tokens:
            end = match.end()
            return text[:end], bool(text[end:].strip())
    return text, False


def split_tokens(text: str, per_piece: int) -> list[str]:
    """``text`` in pieces of ``per_piece`` tokens (the last may hold fewer), cut at token
    ends so that the pieces' token counts add up to the whole's."""
    pieces: list[str] = []
    start = 0
    for i, match in enumerate(_TOKEN.finditer(text), start=1):
        if i % per_piece == 0:
            pieces.append(text[start:match.end()])
            start = match.end()
    if text[start:].strip() or not pieces:
        pieces.append(text[start:])
    elif text[start:]:
        pieces[-1] += text[start:]
    return pieces


def key_terms(prompt: str, limit: int = 6) -> list[str]:
    """The prompt's distinctive words, in order of first appearance."""
    terms: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(prompt):
        low = word.lower()
        if low in _STOPWORDS or low in seen:
            continue
        seen.add(low)
        terms.append(low)
        if len(terms) == limit:
            break
    return terms


def wants_code(prompt: str) -> bool:
    """Whether the prompt asks for code."""
    return _CODE_ASK.search(prompt) is not None


def generate_text(prompt: str, *, good: bool, rng: random.Random) -> str:
    """A good answer to ``prompt`` (on-topic, complete) or a bad one (off-topic filler,
    repetitive, cut mid-sentence)."""
    return _good_answer(prompt, rng) if good else _bad_answer(rng)


def _good_answer(prompt: str, rng: random.Random) -> str:
    terms = key_terms(prompt) or ["request", "answer"]
    first, second = terms[0], terms[1 % len(terms)]
    parts = [rng.choice((
        f"Here is a focused answer about {first} and {second}.",
        f"This answer covers {first}, {second} and how they relate.",
        f"In short, {first} depends on {second}, as explained below.",
    ))]
    items = _LIST_ITEM.findall(prompt)
    if items:
        for number, item in enumerate(items, start=1):
            item_terms = key_terms(item, limit=3) or terms[:2]
            parts.append(f"{number}. {item.rstrip('.?!:')}: this comes down to "
                         f"{' and '.join(item_terms)}, applied consistently.")
    else:
        for term in terms[2:5]:
            parts.append(rng.choice((
                f"The role of {term} matters because it shapes {first}.",
                f"Consider {term} together with {second} to avoid surprises.",
                f"A practical check is to measure {term} before changing {first}.",
            )))
    if wants_code(prompt):
        parts.append(_code_block(terms))
    parts.append(f"In summary, {first} and {second} should be handled together.")
    return "\n".join(parts)


def _identifier(word: str) -> str:
    name = re.sub(r"\W", "_", word).lower().strip("_") or "value"
    if name[0].isdigit() or keyword.iskeyword(name):
        name = f"x_{name}"
    return name


def _code_block(terms: list[str]) -> str:
    func = _identifier("_".join(terms[:2]))
    arg = _identifier(terms[-1])
    if arg == func:
        arg = "value"
    return (
        "```python\n"
        f"def {func}({arg}):\n"
        f'    """Handle {" and ".join(terms[:2])}."""\n'
        f"    result = [item for item in {arg} if item is not None]\n"
        "    return result\n"
        "```"
    )


def _bad_answer(rng: random.Random) -> str:
    phrase = rng.choice(_FILLER)
    other = rng.choice(_FILLER)
    repeats = rng.randint(3, 6)
    # Repetition and a missing ending are what a quality metric should catch.
    return (f"Well, {phrase} is {phrase}. " * repeats) + f"Also {other} and then the"
