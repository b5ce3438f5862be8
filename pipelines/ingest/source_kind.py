"""Guess each source's kind (prose, code or reference) from a seeded sample of its records.

`mixforge init` writes the guess and its evidence into the config, because the kind decides
which filters run: prose rules (Gopher, C4, FineWeb) remove most code and reference text by
design. The features are the ones those filters judge by, measured on the sample:
code-like lines, mean line length, lines ending in sentence punctuation, short lines,
alphabetic words (Gopher's alpha rule), stop words, and lid.176's language and confidence.
The guess uses code-like lines, code file names, indented or markup lines and alphabetic words;
the others separate the demo's prose from its reference text less well (stop words: fortunes
11%, reference texts 8-13%) and stay in `SourceFeatures` for reading.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field

from datatrove.data import Document

from mixforge.config import MixforgeConfig
from mixforge.pipelines.ingest.stage import SourcesReader, plan_work, source_keys

SAMPLE = 200  # records per source: enough for shares to +-7 points (95%), seconds to read
SCAN_FACTOR = 50  # read at most SAMPLE * SCAN_FACTOR records per source (files in seeded order)
LINES_PER_DOC = 200  # one long file must not outweigh the rest of the sample
WORD_CHARS_PER_DOC = 3000  # characters per record split into words


def sample_records(cfg: MixforgeConfig, index: int, n: int = SAMPLE, seed: int | None = None) -> list[Document]:
    """A seeded sample of up to `n` readable records of source `index`, read with ingest's readers
    (so ids, labels and texts are the ones the build sees). Files are visited in a seeded order and
    at most n * SCAN_FACTOR records are read: bounded time on a large source."""
    rng = random.Random(cfg.seed if seed is None else seed)
    items = [it for it in plan_work(cfg) if it.source == index]
    rng.shuffle(items)
    keys = source_keys(cfg)
    reader = SourcesReader([items], [s.model_dump() for s in cfg.sources], keys)
    sample: list[Document] = []
    seen = 0
    for doc in reader.run():
        if doc.metadata.get("reason"):  # malformed: ingest counts it, it says nothing about the kind
            continue
        seen += 1
        if len(sample) < n:  # reservoir sampling (Algorithm R)
            sample.append(doc)
        else:
            j = rng.randrange(seen)
            if j < n:
                sample[j] = doc
        if seen >= n * SCAN_FACTOR:
            break
    return sample


# A line that reads as code: a statement keyword at its start, or code punctuation at its end.
# Control keywords (if/for/while) count only with code punctuation after them, because wrapped
# prose lines start with them too ("if the maintainer ..."). Calibrated on the demo: Python
# source scores ~0.5, prose and documentation (with their code examples) under 0.15.
CODE_LINE = re.compile(
    r"""^\s*(?:
        (?:def|class|func|fn|package|import|from\s+[\w.]+\s+import|return|yield|raise|assert|pass|break|continue
           |var|let|const|pub|public|private|protected|static|struct|impl|interface|enum|typedef|using|namespace
           |try|except|finally|elif|else|defer|go|select|switch|case|async|await)\b
      | \#\s*(?:include|define|if|ifdef|ifndef|endif|pragma)\b
      | //|/\*                                            # C-family comments
      | (?:if|for|while|with|catch)\b.*[:{(]\s*$
      | @[\w.]+                                          # decorator / annotation
      | [\w.\[\]'"]+(?:\s*,\s*[\w.]+)*\s*(?:[-+*/%|&^]?=|:=)(?!=)\s*\S   # assignment (a, b = ...)
      | [\w.]+\(.*\)\s*$                                  # a call on its own line
      | [)\]}]+[,;]?\s*$                                  # closing brackets
      | .*(?:[{;]|\)\s*:|=>|->)\s*$                       # ends like a statement or block opener
    )""",
    re.X,
)
# A line that reads as markup or structure rather than running text: headings and their
# underlines (reST, Markdown), directives (reST, Texinfo, roff), key: value fields (Debian
# copyright files, mail headers), dictionary headwords ("WORD, n." / ":term: n."), ALL-CAPS
# section names (man pages).
MARKUP_LINE = re.compile(
    r"""^(?:
        [=\-~^*#+_`'"]{3,}\s*$
      | \s*\.\.\s | @\w+ | \.[A-Za-z]{1,2}(?:\s|$) | \#{1,6}\s
      | [A-Z][\w -]{0,30}:\s
      | [A-Z][A-Z'-]+(?:\s[A-Z'-]+)*,\s+\w{1,5}\.
      | :[^:\s][^:]{0,40}:\s
      | [A-Z][A-Z0-9 ()_/-]{2,}\s*$
    )""",
    re.X,
)
CODE_EXTENSIONS = {
    ".py", ".pyi", ".go", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".java", ".kt", ".scala", ".rs",
    ".js", ".mjs", ".ts", ".tsx", ".jsx", ".rb", ".php", ".pl", ".pm", ".sh", ".bash", ".zsh", ".cs", ".swift",
    ".m", ".mm", ".lua", ".r", ".jl", ".hs", ".ml", ".ex", ".exs", ".erl", ".clj", ".dart", ".sql", ".f90", ".zig",
}
SENTENCE_END = (".", "!", "?", '"', "'", ")", "\u201d")  # FineWeb's terminal punctuation, plus closing quotes


@dataclass
class SourceFeatures:
    """What the sample of one source looks like (shares are of non-blank lines, or of words)."""

    records: int
    code_lines: float
    markup_lines: float
    indented_lines: float
    sentence_end_lines: float
    short_lines: float  # <= 30 characters, FineWeb's short line
    mean_line_chars: float
    alpha_words: float  # words with a letter, over Gopher's word split (its alpha rule)
    stop_words: float  # Gopher's stop words per word
    code_extensions: float  # records whose id names a file with a code extension
    top_extensions: list[str] = field(default_factory=list)
    language: str = ""
    language_score: float = 0.0  # mean lid.176 probability of `language` over the sample


def record_extension(doc: Document) -> str:
    """The file extension a record's own id names, e.g. '.py' for
    'code/usr/lib/python3.11/difflib.py#8' ('' without an id: the input file's name says how
    records are stored, not what they are)."""
    name = str(doc.metadata.get("source_id") or "")
    name = name.rsplit("/", 1)[-1].split("#", 1)[0].split("?", 1)[0]
    return ("." + name.rsplit(".", 1)[1].lower()) if "." in name.strip(".") else ""


def measure(docs: list[Document], lid=None) -> SourceFeatures:
    """The features of a sample (`lid`: a datatrove FastTextLID; default the offline lid.176)."""
    from datatrove.utils.text import split_into_words

    from mixforge.pipelines.language_id import OfflineFT176

    lines = [line for d in docs for line in [ln for ln in d.text.splitlines() if ln.strip()][:LINES_PER_DOC]]
    n_lines = max(len(lines), 1)
    share = lambda pred: sum(1 for ln in lines if pred(ln)) / n_lines  # noqa: E731
    # Gopher's tokenizer (spaCy: most of init's time), on each record's start only
    words = [w for d in docs for w in split_into_words(d.text[:WORD_CHARS_PER_DOC])]
    n_words = max(len(words), 1)
    stop = {"the", "be", "to", "of", "and", "that", "have", "with"}  # Gopher's stop words
    exts = Counter(record_extension(d) for d in docs)
    lid = lid or OfflineFT176()
    predictions = [lid.predict(d)[0] for d in docs]
    languages = Counter(lang for lang, _ in predictions)
    language = languages.most_common(1)[0][0] if predictions else ""
    return SourceFeatures(
        records=len(docs),
        code_lines=share(CODE_LINE.match),
        markup_lines=share(MARKUP_LINE.match),
        indented_lines=share(lambda ln: ln[:1] in (" ", "\t")),
        sentence_end_lines=share(lambda ln: ln.rstrip().endswith(SENTENCE_END)),
        short_lines=share(lambda ln: len(ln) <= 30),
        mean_line_chars=sum(len(ln) for ln in lines) / n_lines,
        alpha_words=sum(1 for w in words if any(c.isalpha() for c in w)) / n_words,
        stop_words=sum(1 for w in words if w.lower() in stop) / n_words,
        code_extensions=sum(v for e, v in exts.items() if e in CODE_EXTENSIONS) / max(len(docs), 1),
        top_extensions=[e for e, _ in exts.most_common(3) if e],
        language=language,
        language_score=sum(s if lang == language else 0.0 for lang, s in predictions) / max(len(predictions), 1),
    )


# Thresholds, from the demo's eight sources (features of each, 200-record samples):
# - code: Python source has 52% code-like lines, documentation with code examples at most 14%
#   (man pages): 30% sits between. A file extension of code on most records decides alone.
# - reference vs prose: the demo's prose (Bible 0%, fortunes 25%) has few indented or markup
#   lines, its reference text 34% (manuals) to 98% (man pages); and Gopher's alphabetic-word
#   share is 79-87% in prose, 54-81% in reference text (markup, options, code examples).
#   Reference if either says so: >= 30% structured lines, or < 72% alphabetic words.
CODE_LINES_MIN = 0.30
CODE_EXTENSIONS_MIN = 0.5
STRUCTURED_LINES_MIN = 0.30
PROSE_ALPHA_WORDS_MIN = 0.72


@dataclass
class KindGuess:
    """A source's guessed kind and the evidence, as `init` writes it beside `kind:`."""

    kind: str
    evidence: str
    features: SourceFeatures


def guess_kind(f: SourceFeatures, min_language_score: float = 0.65) -> KindGuess:
    """The kind a sample's features point to, with the figures that decided it."""
    structured = min(f.markup_lines + f.indented_lines, 1.0)  # markup lines are rarely indented
    if f.records == 0:
        return KindGuess("prose", "no readable records to guess from; prose is the default", f)
    if f.code_extensions >= CODE_EXTENSIONS_MIN or f.code_lines >= CODE_LINES_MIN:
        kind = "code"
        named = f", {f.code_extensions:.0%} of records named as code files" if f.code_extensions else ""
        why = f"{f.code_lines:.0%} code-like lines" + (f", file types {', '.join(f.top_extensions)}" if f.top_extensions else "") + named
    elif structured >= STRUCTURED_LINES_MIN or f.alpha_words < PROSE_ALPHA_WORDS_MIN:
        kind = "reference"
        signs = [f"{structured:.0%} indented or markup lines (>= {STRUCTURED_LINES_MIN:.0%})"] if structured >= STRUCTURED_LINES_MIN else []
        if f.alpha_words < PROSE_ALPHA_WORDS_MIN:
            signs.append(f"{f.alpha_words:.0%} alphabetic words (< {PROSE_ALPHA_WORDS_MIN:.0%})")
        why = ", ".join(signs) + f", {f.code_lines:.0%} code-like lines"
    else:
        kind = "prose"
        why = (f"{structured:.0%} indented or markup lines, {f.alpha_words:.0%} alphabetic words, "
               f"{f.sentence_end_lines:.0%} lines end a sentence, {f.code_lines:.0%} code-like lines")
    language = f"language {f.language} {f.language_score:.2f}"
    if f.language_score < min_language_score:
        skipped = "the language filter is skipped for code" if kind == "code" else "the language filter may remove much of it"
        language += f" (low confidence, under filters.language.min_score {min_language_score:g}: {skipped})"
    records = f"{f.records} record" + ("s" if f.records != 1 else "")
    return KindGuess(kind, f"guessed from {records}: {why}; {language}", f)


def guess_source_kinds(cfg: MixforgeConfig, n: int = SAMPLE) -> list[KindGuess]:
    """Each source's guess from a seeded sample of `n` records (the config's seed)."""
    from mixforge.pipelines.language_id import OfflineFT176

    lid = OfflineFT176()
    return [guess_kind(measure(sample_records(cfg, i, n), lid), cfg.filters.language.min_score) for i in range(len(cfg.sources))]
