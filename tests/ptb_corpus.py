"""A corpus that puts every Unicode punctuation and symbol character, the HTML entities and the emoticons the PTB
lexer knows into words, and the live Java PTBTokenizer 3.4.1 jar pycocoevalcap ships, to check
:mod:`capsearch.evaluation.ptb_tokenizer` (and its symbol table) against."""

from __future__ import annotations

import shutil
import subprocess
import unicodedata
from pathlib import Path

from pycocoevalcap.tokenizer import ptbtokenizer

JAR = Path(ptbtokenizer.__file__).parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
HAS_JAVA = shutil.which("java") is not None and JAR.exists()

# each character in each of these places: between words, inside a word, at either end, between digits, doubled,
# and before a sentence end
TEMPLATES = ("a {} b", "a{}b", "{}ab", "ab{}", "1{}2", "{}1", "a {0}{0} b", "A{}. The")
ENTITIES = ("&amp;", "&quot;", "&#39;", "&nbsp;", "&lt;", "&gt;", "&apos;", "&#8217;", "&#x2019;", "&copy;",
            "&eacute;", "&hellip;", "&mdash;", "&ndash;", "&pound;", "&euro;", "&amp", "& amp;", "AT&amp;T",
            "a&amp;b", "&MD;", "&HT;", "&odq;", "&AMP;", "S&amp;P", "&#160;")  # fmt: skip
PHRASES = (
    ":)", ":-)", ";)", ":(", ":D", ":P", ":p", ":o", ":O", ":/", ":|", ":]", ":[", "=)", "8)", ":*", ":'(", "<3",
    ":-D", ";P", ":@", ":o)", ">:(", ":{", ":}", ":)a", ":)1", ":))", "^_^", ">_<", "-_-", "*_*", "^^",
    "#hashtag", "#1", "#a1b", "#éte", "@user", "@1a", "a@b", "a@b.c", "a@b, c", "ü@b",
    "£5", "€10", "¥100", "$5", "5%", "US$5", "¿qué?", "¡hola!", "soft\u00adhyphen", "1\u00ad000", "\u00ad\u00ad",
    "it’s", "dog’s", "don’t", "‘quoted’", "“double”", "„low“", "‚low‘", "«guillemets»", "‹single›", "it&apos;s",
    "TM™", "©2020", "®", "。", "、", "…", "...", "—dash", "a–b", "1½", "¼ cup", "⅛", "3×4", "°C", "x²", "H₂O",
    "naïve café", "ÉCOLE", "x\U0001d400y", "\U0001d400z", "a\U0001f600b", "cafe\u0301", "\u1c90\u1c91 ok",
    "Straße", "ab!cd", "a.b!c", "hi!there?you", "dog.cat.", "a!b!", "1a.b", "C++",
    "<p>hi</p>", "<!-- c -->", "a<br>b", "a < b > c", "a<<b", "a // b", "caf&eacute;", "&eacute;1a",
)  # fmt: skip


def corpus_lines() -> list[str]:
    """Every punctuation, symbol, mark (accents, vowel signs) and numeral (No) character of the Basic Multilingual
    Plane in every place of :data:`TEMPLATES`, every letter and digit between words, then the entities (between
    words, inside a word, before a word, between digits) and :data:`PHRASES`."""
    chars = [
        c
        for c in map(chr, range(0x21, 0x10000))
        if unicodedata.category(c)[0] in "PSM" or unicodedata.category(c) == "No"
    ]
    chars += ["\u00ad", "\u200b", "\x80"]
    lines = [template.format(c) for c in chars for template in TEMPLATES]
    letters = [
        c
        for c in map(chr, range(0x80, 0x10000))
        if unicodedata.category(c)[0] == "L" or unicodedata.category(c) == "Nd"
    ]
    lines += [f"x {c} y" for c in letters]  # which letters the jar knows (its Unicode tables are older)
    lines += [template.format(e) for e in ENTITIES for template in ("a {} b", "a{}b", "{}b", "1{}2")]
    return lines + [f"a {p} b" for p in PHRASES] + list(PHRASES)


def java_ptb(lines: list[str], folder: Path, lower: bool = True) -> list[str]:
    """The jar's output lines for ``lines`` tokenized as one file, as pycocoevalcap runs it (``-preserveLines``)."""
    source = folder / "captions.txt"
    source.write_text("\n".join(lines), encoding="utf-8")
    command = ["java", "-cp", str(JAR), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines"]
    result = subprocess.run(
        [*command, *(["-lowerCase"] if lower else []), str(source)], capture_output=True, check=True
    )
    return result.stdout.decode("utf-8").split("\n")[: len(lines)]


def classes(lines: list[str], output: list[str]) -> dict[str, dict[str, str] | set[str]]:
    """What the jar did with each non-ASCII character of the corpus, from "a X b", "a XX b" and "aXb": a token of
    its own (``tokens``: the character -> its token), a letter inside words (``word``), or deleted (``deleted``)."""
    said = dict(zip(lines, output, strict=True))
    found: dict[str, dict[str, str] | set[str]] = {"tokens": {}, "word": set(), "deleted": set()}
    for c in sorted({line[2] for line in lines if len(line) == 5 and line.startswith("a ") and line.endswith(" b")}):
        if c.isascii():
            continue
        one, two, glued = said[f"a {c} b"], said[f"a {c}{c} b"], said[f"a{c}b"]
        if one == "a b":
            found["deleted"].add(c)  # type: ignore[union-attr]
        elif two == f"a {c}{c} b" and glued == f"a{c}b":
            found["word"].add(c)  # type: ignore[union-attr]
        else:
            found["tokens"][c] = one.split()[1]  # type: ignore[index]
    return found
