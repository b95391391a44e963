"""Build the pretraining corpus of `assets/bart-mini`: openly licensed English text reachable offline, as words.

Sources (see `assets/bart-mini/DATA_CARD.md` for licences and counts):
- WordNet 3.0 glosses and examples (Debian `wordnet-base`): one sentence per synset, covering the whole vocabulary,
  label words included ("location", "cuisine", "director");
- the Debian Administrator's Handbook (`debian-handbook`, English HTML) and the Python 3.11 documentation
  (`python3.11-doc`, HTML): paragraphs of running prose;
- the TRAIN splits of the shared LightNER data (CoNLL-2003 `train.txt`, MIT Movie and MIT Restaurant
  `500-shot-train.txt`, ATIS `50-shot-train.txt`), words only, tags dropped; never a dev or test file.

Every document is a list of sentences and every sentence a list of words, split the way LightNER splits raw text
(`text_utils.split_words`), because the encoder will later see each word BPE-encoded on its own with a leading space:
pretraining on the same word-by-word encoding is what makes the pointer features fit. Output: one JSON line per
document, `{"source": NAME, "sentences": [[word, ...], ...]}`, in a fixed order (the seed only matters later).

    python pretraining/build_corpus.py --output runs/corpus.jsonl      # downloads 3 .deb files with apt-get (54 MB)
"""

from __future__ import annotations

import argparse
import html.parser
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from lightner.formats import read_conll  # noqa: E402
from lightner.text_utils import split_words  # noqa: E402

DEBIAN_PACKAGES = ("wordnet-base", "debian-handbook", "python3.11-doc")
SHARED_TRAIN_SPLITS = (
    "conll2003/train.txt",
    "mit-movie/500-shot-train.txt",
    "mit-restaurant/500-shot-train.txt",
    "atis/50-shot-train.txt",
)
# Documents grouped from single sentences (WordNet synsets, MIT and ATIS queries), so sentence permutation has
# something to permute.
SENTENCES_PER_GROUP = 8
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")
MIN_PARAGRAPH_WORDS = 6


def fetch_debian_packages(cache: Path) -> Path:
    """Download and unpack the Debian packages into `cache/root` (idempotent); return that root."""
    root = cache / "root"
    if (root / "usr/share/wordnet").is_dir():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *DEBIAN_PACKAGES], cwd=cache, check=True)
    for deb in sorted(cache.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def words_of(text: str) -> list[str]:
    return [text[start:end] for start, end in split_words(text)]


def grouped(sentences: list[list[str]], source: str) -> Iterator[dict]:
    for first in range(0, len(sentences), SENTENCES_PER_GROUP):
        yield {"source": source, "sentences": sentences[first : first + SENTENCES_PER_GROUP]}


def wordnet_documents(root: Path) -> Iterator[dict]:
    """One sentence per synset: "lemma, lemma: gloss; examples", the lexicographer's own wording."""
    sentences = []
    for part in ("noun", "verb", "adj", "adv"):
        for line in (root / f"usr/share/wordnet/data.{part}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:  # the licence header
                continue
            fields, gloss = line.split("|", 1)
            columns = fields.split()
            lemmas = [columns[4 + 2 * k].replace("_", " ") for k in range(int(columns[3], 16))]
            lemmas = [re.sub(r"\(.*\)$", "", lemma) for lemma in lemmas]
            sentences.append(words_of(f"{', '.join(lemmas)}: {gloss.strip()}"))
    yield from grouped(sentences, "wordnet")


class ParagraphParser(html.parser.HTMLParser):
    """Collects the text of paragraphs, `<p>` (Sphinx) or `<div class="para">` (DocBook), not code or navigation."""

    def __init__(self) -> None:
        super().__init__()
        self.open_tags: list[bool] = []  # per open <p>/<div>: does it start a paragraph?
        self.depth = 0
        self.paragraphs: list[str] = []
        self.current: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("p", "div"):
            starts = tag == "p" or ("class", "para") in attrs
            self.open_tags.append(starts)
            self.depth += starts

    def handle_endtag(self, tag):
        if tag in ("p", "div") and self.open_tags and self.open_tags.pop():
            self.depth -= 1
            if not self.depth:
                self.paragraphs.append(" ".join("".join(self.current).split()))
                self.current = []

    def handle_data(self, data):
        if self.depth:
            self.current.append(data)


def html_documents(folder: Path, source: str) -> Iterator[dict]:
    """One document per HTML paragraph of at least MIN_PARAGRAPH_WORDS words, split into sentences."""
    for page in sorted(folder.rglob("*.html")):
        parser = ParagraphParser()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        for paragraph in parser.paragraphs:
            sentences = [words_of(sentence) for sentence in SENTENCE_END.split(paragraph)]
            sentences = [sentence for sentence in sentences if sentence]
            if sum(map(len, sentences)) >= MIN_PARAGRAPH_WORDS:
                yield {"source": source, "sentences": sentences}


def shared_documents(data_dir: Path) -> Iterator[dict]:
    """The TRAIN splits' words: CoNLL-2003 by its own documents (`-DOCSTART-`), the queries in groups."""
    for split in SHARED_TRAIN_SPLITS:
        if split.startswith("conll2003"):
            yield from conll_documents(data_dir / split)
        else:
            yield from grouped([sentence.words for sentence in read_conll(data_dir / split)], split)


def conll_documents(path: Path) -> Iterator[dict]:
    """CoNLL-2003 documents as the file delimits them, so permuted sentences come from one news story."""
    document: list[list[str]] = []
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        line = line.strip()
        if line.startswith("-DOCSTART-"):
            if document:
                yield {"source": str(path.relative_to(path.parent.parent)), "sentences": document}
            document = []
        elif not line:
            if words:
                document.append(words)
            words = []
        else:
            words.append(re.split(r"[\t ]", line)[0])
    if document:
        yield {"source": str(path.relative_to(path.parent.parent)), "sentences": document}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path("runs/corpus-debs"), help="where the .deb files go")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("LIGHTNER_SHARED_DIR", REPO_ROOT.parent / "shared")) / "data/lightner",
    )
    args = parser.parse_args(argv)
    root = fetch_debian_packages(args.cache)
    documents = [
        *wordnet_documents(root),
        *html_documents(root / "usr/share/doc/debian-handbook/html/en-US", "debian-handbook"),
        *html_documents(root / "usr/share/doc/python3.11/html", "python3.11-doc"),
        *shared_documents(args.data_dir),
    ]
    random.Random(0).shuffle(documents)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as out:
        for document in documents:
            out.write(json.dumps(document, ensure_ascii=False) + "\n")
    counts: dict[str, list[int]] = {}
    for document in documents:
        count = counts.setdefault(document["source"], [0, 0, 0])
        count[0] += 1
        count[1] += len(document["sentences"])
        count[2] += sum(map(len, document["sentences"]))
    print(json.dumps({source: dict(zip(("documents", "sentences", "words"), c)) for source, c in counts.items()}))


if __name__ == "__main__":
    main()
