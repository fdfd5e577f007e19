"""The tokenisers the official NLG scorers apply before counting n-grams.

* ``mteval_tokenize``: mteval-v13a's default tokenisation with its default lowercasing, as the
  E2E scorer runs it for BLEU and NIST (sacrebleu's 13a tokenizer is a port of the same regexes).
* ``coco_tokenize_jar``: what coco-caption's ``PTBTokenizer`` (and so the E2E scorer's METEOR,
  ROUGE-L and CIDEr) does: the Stanford CoreNLP 3.4.1 jar that ``pycocoevalcap`` ships, run as
  ``java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer -preserveLines
  -lowerCase FILE`` on one sentence per line, then the package's ``PUNCTUATIONS`` filter.
  We run the package's jar with the package's command and filter ourselves, because its class
  writes its input file into its own (site-packages) folder; ours goes to a private temporary
  folder that is removed afterwards.
* ``ptb_tokenize`` / ``coco_tokenize``: a pure-Python emulation of the same, the fallback when
  java is missing.
* ``treebank_tokenize``: GenerationEval's ``' '.join(nltk.word_tokenize(text))`` (WebNLG/DART
  METEOR and TER), with an untrained Punkt sentence splitter told common abbreviations, because
  nltk's trained punkt data is not installed here.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

_TOKENIZER_13A = Tokenizer13a()
# mteval-v13a lowercases with Perl's tr/[A-Z]/[a-z]/: ASCII letters only.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def mteval_tokenize(text: str, lowercase: bool = True) -> list[str]:
    """mteval-v13a ``tokenization()``: entity unescaping, punctuation split, ASCII lowercasing."""
    # mteval reads each segment out of SGML with all whitespace runs turned into one space.
    text = " ".join(text.split())
    if lowercase:
        text = text.translate(_ASCII_LOWER)
    return _TOKENIZER_13A(text).split()


# --- Stanford PTBTokenizer (CoreNLP 3.4.1) emulation ------------------------------------------
# Checked line by line against the real jar (CoreNLP 3.4.1 from the pycocoevalcap wheel): after
# coco-caption's punctuation filter, 100% of the 9,365 E2E dev+test references tokenise the
# same, and 99.7-99.8% of the WebNLG test, DART test and SAMSum test references (the misses are
# rare abbreviations, initials and slashed number lists). Like the jar's JFlex lexer it takes,
# at each position, the longest match over the rules below (ties go to the earlier rule).

# coco-caption's ptbtokenizer.py drops exactly these tokens after tokenising. The bracket
# escapes are upper case there while the jar's -lowerCase output is "-lrb-", so coco-caption
# keeps brackets as tokens; we reproduce that.
COCO_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
     "...", ";"])

_CHAR_MAP = str.maketrans({
    "\u2018": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u00a0": " ", "\u2009": " ", "\u202f": " ",
})
# PTB3 normalisation of dashes, the ellipsis character and currency ("£" -> "#", "€" -> "$").
_CHAR_SPLITS = [("\u2013", " -- "), ("\u2014", " -- "), ("\u2015", " -- "), ("\u2026", " ... "),
                ("\u00a3", " # "), ("\u20ac", " $ ")]

_ENTITIES = [("&quot;", '"'), ("&lt;", "<"), ("&gt;", ">"), ("&apos;", "'"), ("&amp;", "&")]
# A curly apostrophe inside a word ("O’Donnell") stays as it is; elsewhere it is a quote or a
# clitic's apostrophe and becomes "'".
_CURLY_APOSTROPHE = re.compile(r"(?<![^\W\d_])\u2019|\u2019(?![^\W\d_])")
_ALNUM = r"[^\W_]"
_LETTER = r"[^\W\d_]"
_APOS_PREFIX = rf"(?:[dDoOlL]['\u2019](?={_ALNUM}))"  # o'clock, O'Neill, d'Artagnan, l'amour
_ABBREVIATIONS = (
    "mr|mrs|ms|dr|drs|prof|st|ste|jr|sr|vs|etc|inc|co|cos|corp|ltd|plc|bros|esq|mt|ft|ave|blvd|rd|"
    "gen|col|lt|capt|sgt|rev|hon|gov|sen|rep|messrs|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|"
    "dec|mon|tue|tues|wed|thu|thurs|fri|al|approx|dept|univ|assn|est|tel|ext|sq")
_SENTENCE_STARTERS = r"(?:The|This|That|These|Those|He|She|It|Its|They|We|There|Then)\b"
_PTB_RULES = [re.compile(rule, re.UNICODE) for rule in (
    # clitics split off beforehand by _split_clitics, kept whole here
    r"(?i:n't|'(?:s|re|ve|m|ll|d|t|n)(?![^\W_]))|'n'",
    # hyphenated "things": family-friendly, 20-25, 5-star, x_y
    rf"{_APOS_PREFIX}?{_ALNUM}+(?:[-_]{_APOS_PREFIX}?{_ALNUM}+)*",
    # an apostrophe between vowels stays inside the word: Ra'ayat, Ya'Kub
    rf"{_LETTER}*[aeiouyAEIOUY]['\u2019][aeiouA-Z]{_LETTER}*",
    # words with internal . ! ? before a letter: eat.type, good!great
    rf"{_LETTER}{_ALNUM}*(?:[.!?]{_LETTER}{_ALNUM}*)*",
    # numbers, signed, with separators: 5.5, .5, 10:30, 1,000, -5
    r"[-+]?(?:\d*(?:[.:,]\d+)+|\d+)",
    # slash compounds and fractions: 3/5, kid/family, front-wheel/all-wheel
    rf"{_ALNUM}+(?:[-_]{_ALNUM}+)*(?:/{_ALNUM}+(?:[-_]{_ALNUM}+)*)+",
    # acronyms keep their periods: u.s., e.g., a.m.
    rf"{_LETTER}(?:\.{_LETTER})+\.?",
    rf"(?i:(?:{_ABBREVIATIONS})\.)",
    # a period the lexer keeps on the word: before in-sentence punctuation ("centre.,"), on an
    # initial ("J. Smith", "5 m. tall") unless a sentence starter follows, and in "No. 5"
    rf"{_LETTER}{_ALNUM}*\.(?=[,;:])",
    rf"[A-Za-z]\.(?!\s+{_SENTENCE_STARTERS}|\s*$)",
    r"(?i:no\.)(?=\s+\d)",
    r"[A-Z]+&[A-Z]+",  # AT&T, B&B (upper case only, as in the lexer)
    r"'\d\ds",  # '90s
    rf"@{_ALNUM}+",
    r"\.\.\.|--|[?!]+|''|``",
    r"\S",
)]
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
_SPECIAL_WORDS = [
    (re.compile(r"(?i)\b(can)(not)\b"), r"\1 \2"),
    (re.compile(r"(?i)\b(gon|got|wan|lem|gim)(na|ta|me)\b"), r"\1 \2"),
    (re.compile(r"(?i)(?<![^\W_])('t)(is|was)\b"), r"\1 \2"),
]
# after a letter or digit: the position before n't (group 1 empty), or 's 're 've 'm 'll 'd
_CLITIC = re.compile(r"(?i)(?<=[^\W_])(?:(?=n['\u2019]t(?![^\W_]))"
                     r"|(['\u2019](?:s|re|ve|m|ll|d))(?![^\W_]))")


def _split_clitics(text: str) -> str:
    """Put a space before n't, 's, 're, 've, 'm, 'll, 'd (don't -> do n't, it's -> it 's)."""
    for pattern, replacement in _SPECIAL_WORDS:
        text = pattern.sub(replacement, text)
    text = _CLITIC.sub(lambda m: " " + (m.group(1) or "").replace("\u2019", "'"), text)
    return text.replace("n\u2019t", "n't")


def _quote_token(text: str, start: int, quote: str) -> str:
    """PTB3 quotes: opening ones become `` or `, closing ones '' or '."""
    after_space = start == 0 or text[start - 1].isspace() or text[start - 1] in "([{`"
    following = text[start + 1:start + 2]
    if quote == '"':
        return "``" if after_space and following and not following.isspace() else "''"
    return "`" if after_space and following.isalpha() else "'"


_SENTENCE_END = re.compile(rf"\s+{_SENTENCE_STARTERS}")
_ACRONYM = re.compile(rf"{_LETTER}(?:\.{_LETTER})+\.")


@lru_cache(maxsize=65536)
def ptb_tokenize(text: str) -> tuple[str, ...]:
    """Tokenise one line as CoreNLP 3.4.1 ``PTBTokenizer -preserveLines -lowerCase`` would."""
    for entity, char in _ENTITIES:
        text = text.replace(entity, char)
    text = text.replace("\n", " ").translate(_CHAR_MAP)
    for char, replacement in _CHAR_SPLITS:
        text = text.replace(char, replacement)
    text = _CURLY_APOSTROPHE.sub("'", _split_clitics(text))
    tokens: list[str] = []
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        # longest match over the rules; the first rule wins a tie
        best = max((rule.match(text, position) for rule in _PTB_RULES),
                   key=lambda m: m.end() if m else -1)
        assert best is not None  # the last rule matches any non-space character
        token = best.group()
        if token in ('"', "'"):
            token = _quote_token(text, position, token)
        tokens.append(_BRACKETS.get(token, token).lower())
        position = best.end()
        if _ACRONYM.fullmatch(token) and _SENTENCE_END.match(text, position):
            tokens.append(".")  # the lexer repeats a sentence-final acronym's period: "u.s. ."
    return tuple(tokens)


def coco_tokenize(text: str) -> str:
    """coco-caption's PTB tokenisation with its punctuation tokens removed (space-joined)."""
    return " ".join(token for token in ptb_tokenize(text) if token not in COCO_PUNCTUATION)


# characters the jar (or Python) treats as line breaks: they would shift the lines out of step
_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def coco_tokenize_jar(texts: Sequence[str]) -> list[str]:
    """coco-caption's PTBTokenizer + punctuation filter on each text, with pycocoevalcap's jar.

    Call it once per set that coco-caption tokenises together (all references, then all
    hypotheses), as the E2E scorer does. Needs ``java`` on the PATH.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    from lora_repro.metrics.meteor import packaged_jar

    jar = packaged_jar("tokenizer", ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    if not texts:
        return []
    lines = [_LINE_BREAKS.sub(" ", text) for text in texts]
    with tempfile.TemporaryDirectory(prefix="lora_repro_ptb_") as folder:
        source = Path(folder) / "sentences.txt"
        source.write_text("\n".join(lines), encoding="utf-8")
        result = subprocess.run(
            ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
             "-lowerCase", str(source)], capture_output=True, check=False)
    if result.returncode != 0:
        error = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"PTBTokenizer ({jar}) failed: {error[-1] if error else 'no output'}")
    output = result.stdout.decode("utf-8").split("\n")
    if output and output[-1] == "" and len(output) == len(lines) + 1:
        output.pop()  # the newline after the last line
    if len(output) != len(lines):
        raise RuntimeError(f"PTBTokenizer returned {len(output)} lines for {len(lines)}")
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuation)
            for line in output]


# --- GenerationEval: ' '.join(nltk.word_tokenize(text)) --------------------------------------
@lru_cache(maxsize=1)
def _nltk_tokenizers():  # imported lazily: nltk is slow to import
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    # Without the trained English model Punkt knows no abbreviations; give it common ones so
    # "Mr. Smith" or "the U.S. team" are not split into sentences.
    parameters = PunktParameters()
    parameters.abbrev_types = set(_ABBREVIATIONS.split("|")) | {"e.g", "i.e", "u.s", "u.k", "a.m",
                                                                "p.m", "no", "vol", "jr", "ca"}
    return PunktSentenceTokenizer(parameters), NLTKWordTokenizer()


def treebank_tokenize(text: str) -> str:
    """``' '.join(nltk.word_tokenize(text))`` with an untrained Punkt sentence splitter."""
    sentence_splitter, word_tokenizer = _nltk_tokenizers()
    return " ".join(token for sentence in sentence_splitter.tokenize(text)
                    for token in word_tokenizer.tokenize(sentence))
