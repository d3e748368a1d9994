"""The COCO caption evaluation's tokenization, in plain Python: Stanford PTBTokenizer 3.4.1, then punctuation removed.

pycocoevalcap runs ``java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer -preserveLines
-lowerCase`` over the captions and drops the tokens in its ``PUNCTUATIONS`` list. This module reproduces that
without Java: a longest-match scanner over the lexer's rules that matter for English captions (contractions and
possessives split off, hyphenated words kept whole, quotes turned into `` and '', brackets into -lrb- and friends,
numbers, fractions, acronyms and abbreviations). It is checked token for token against the real jar on all 40,460
Flickr8k captions and on a stored table of tricky captions (``tests/data/ptb_cases.json``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from capsearch.evaluation.ptb_symbols import NEWER_LETTERS, NORMALIZED, SYMBOL_RANGES, WORD_RANGES

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS, compared after lower-casing (so "-LRB-" never matches "-lrb-")
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# A letter. Python's \w also holds the numerals that are no decimal digits (No, Nl: ½, ², Ⅻ), which the lexer's
# [:letter:] does not.
_NUMERALS = "".join(c for c in map(chr, range(0x80, 0x10000)) if unicodedata.category(c) in ("No", "Nl"))
# Mongolian U+1885-U+1886 were letters in the jar's Unicode tables (marks in Python's); beyond the Basic Multilingual
# Plane the jar knows no letter.
_L = rf"(?:[^\W\d_{_NUMERALS}\U00010000-\U0010FFFF]|[\u1885\u1886])"
# characters the jar's tables do not know, read as U+FFFF (which no rule matches): deleted, and no rule's context
_UNKNOWN = {c: "\uffff" for a, b in NEWER_LETTERS for c in range(a, b + 1)}
_WORD_EXTRA = "".join(f"{chr(a)}-{chr(b)}" for a, b in WORD_RANGES)  # marks the WORD rule takes as letters
_SYMBOL_OF = {chr(c): chr(c) for a, b in SYMBOL_RANGES for c in range(a, b + 1)} | NORMALIZED
_LD = rf"(?:{_L}|\d)"  # a letter or digit
_APOS = "(?:['\u0092\u2019]|&apos;)"
_APOSETC = "(?:['\u0092\u2019\u0091\u2018\u201b]|&apos;)"
_SPLET = r"&[aeiouAEIOU](?i:acute|grave|uml);"  # an accented vowel as an entity, inside a word
_WORD_CHAR = rf"(?:{_L}|[{_WORD_EXTRA}]|{_SPLET}|\u00ad)"
_WORD = rf"{_WORD_CHAR}(?:{_WORD_CHAR}|\d)*"  # the WORD rule: soft hyphens are removed from the token
_SPACE = r"[ \t\u00a0\u2000-\u200a\u3000]"
_SPACENL = r"[ \t\u00a0\u2000-\u200a\u3000\r\n\u2028\u2029\u000b\u000c\u0085]"
_ACRO = r"[A-Za-z](?:\.[A-Za-z])+"
_ABBREV1 = (
    r"(?i:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|Mon|Tue|Tues|Wed|Thu|Thurs|Fri|Ala|Ariz|Ark|Calif|Colo|Conn"
    r"|Dak|Del|Fla|Ga|Ill|Ind|Kans?|Ky|La|Mass|Md|Mich|Minn|Miss|Mo|Mont|Neb|Nev|Okla|Ore|Pa|Penn|Tenn|Tex|Va|Vt|Wash"
    r"|Wisc?|Wyo|Inc|Cos?|Corp|Pp?tys?|Ltd|Plc|Bancorp|Dept|Bhd|Assn|Univ|Intl|Sys|tel|est|ext|sq|ft"
    r"|Jr|Sr|Bros|(?:Ed|Ph)\.D|Blvd|Rd|Esq|etc|al|seq|Bldg)\."
)
# only an abbreviation before a number ("No. 5", "fig. 3"; "No. the dog" is "No" and ".")
_ABBREV3 = r"(?i:ca|figs?|prop|nos?|art|bldg|pp|op)\."
_ABBREV4 = (
    "[A-Za-z]",
    r"(?i:Mr|Mrs|Ms|Miss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Mt|Capt|Ste?"
    r"|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|vs|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS|Invt|Elec|Natl|M[ft]g|Ph)",
    _ACRO,
)
_SENTEND_WORDS = (  # case-sensitive in the lexer
    "About|According|Additionally|After|An|A|As|At|But|Earlier|He|Her|Here|However|If|In|It|Last|Many|More|Mr\\.|Ms\\."
    "|Now|Once|One|Other|Our|She|Since|So|Some|Such|That|The|Then|There|These|They|This|We|When|While|What|Yet|You"
)
_QUOTE_CHARS = "'`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb"
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}


def _latex_quote(text: str, probably_left: bool) -> str:
    """PTBLexer's handleQuotes with latexQuotes on."""
    if text in ('"', "&quot;"):
        return "``" if probably_left else "''"
    if text in ("'", "&apos;"):
        return "`" if probably_left else "'"
    text = text.replace("&apos;", "'")
    out = []
    for char in text:
        if char in "\u2018\u0091\u201b\u2039`":  # the low quotes (U+201A, U+201E) and U+201F stay as they are
            out.append("`")
        elif char in "\u2019\u0092'\u203a":
            out.append("'")
        elif char in "\u201c\u0093\u00ab":
            out.append("``")
        elif char in "\u201d\u0094\u00bb":
            out.append("''")
        else:
            out.append(char)
    return "".join(out)


@dataclass(frozen=True)
class _Rule:
    """One lexer rule: ``pattern``, then ``context`` that must follow (counted for the longest match, not consumed).

    ``emit`` turns the matched text into tokens; ``keep`` is how many matched characters are consumed (``None``:
    all of them), for rules that give characters back.
    """

    pattern: re.Pattern[str]
    context: re.Pattern[str] | None
    emit: Callable[[str], list[str]]
    keep: Callable[[str], int] | None = None


def _rules(
    *alternatives: str,
    emit: Callable[[str], list[str]] | None = None,
    context: str | None = None,
    keep: Callable[[str], int] | None = None,
) -> list[_Rule]:
    """One rule per alternative, so that the scanner's longest match also chooses among a rule's alternatives."""
    return [
        _Rule(re.compile(pattern), re.compile(context) if context else None, emit or (lambda text: [text]), keep)
        for pattern in alternatives
    ]


def _nbsp(text: str) -> list[str]:
    return [text.replace(" ", "\u00a0")]


def _period_again(text: str) -> list[str]:
    """An abbreviation that also ends the sentence: the token keeps its period and a "." follows."""
    return [text, "."]


def _phone(text: str) -> list[str]:
    return [text.replace(" ", "\u00a0").replace("(", "-LRB-").replace(")", "-RRB-")]


def _without_soft_hyphens(text: str) -> list[str]:
    """A word or number with its soft hyphens (U+00AD) removed; a run of soft hyphens alone is "-"."""
    return [text.replace("\u00ad", "") or "-"]


def _amp(text: str) -> list[str]:
    return [re.sub("(?i:&amp;)", "&", text)]


def _smiley(text: str) -> list[str]:
    return [text.replace("(", "-LRB-").replace(")", "-RRB-")]


_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_ENTITY_BRACKETS = {"&lt;": "<", "&gt;": ">"}


def _left_quote(text: str) -> list[str]:
    return [_latex_quote(text, True)]


def _right_quote(text: str) -> list[str]:
    return [_latex_quote(text, False)]


_SGML = r"<\/?[A-Za-z!][^>\r\n]*>"
_SMILEY = r"[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]]"
_EMAIL = r"[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0]*@(?:[^ \t\n\f\r\"<>|().\u00a0]+\.)*[^ \t\n\f\r\"<>|().\u00a0]+"
_REDAUX = rf"{_APOS}(?i:[msd]|re|ve|ll)"
_QUOTES = (_APOS, "''", f"[{_QUOTE_CHARS}]{{1,2}}")
_THING_PART = rf"(?:[dDoOlL]{_APOSETC}{_LD})?{_LD}+"

# In the lexer's order: on equal lengths the earlier rule wins.
_RULES: list[_Rule] = [
    *_rules(r"(?i:cannot)", emit=lambda text: [text[:3]], keep=lambda text: 3),
    *_rules(r"(?i:gonna|gotta|lemme|gimme|wanna)", emit=lambda text: [text[:-2]], keep=lambda text: len(text) - 2),
    *_rules(_SGML, emit=lambda text: [text.replace(" ", "\u00a0")]),
    *_rules("[\u0096\u0097\u2013\u2014\u2015]", "&(?i:MD|mdash|ndash);", emit=lambda text: ["--"]),
    *_rules("&(?i:amp);", emit=lambda text: ["&"]),
    *_rules(r"&(?i:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);"),
    *_rules(_WORD, emit=_without_soft_hyphens, context=_REDAUX),
    *_rules(r"[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*", emit=_without_soft_hyphens, context=rf"(?i:n){_APOSETC}(?i:t)"),
    *_rules(_WORD, emit=_without_soft_hyphens),
    *_rules(
        rf"{_APOS}n{_APOS}?",
        rf"[lLdDjJ]{_APOS}",
        rf"(?i:Dunkin|somethin|ol){_APOS}",
        rf"{_APOS}(?i:em|[2-9]0s|till?|cause)",
        rf"[A-HJ-XZn]{_APOSETC}{_L}{{2,}}",
        rf"{_L}+[aeiouyAEIOUY]{_APOSETC}[aeiouA-Z]{_L}*",
        r"(?i:cont'd\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
    ),
    *_rules(rf"{_APOS}[tT]", context=r"(?i:is|was)", keep=lambda text: len(text)),  # 'tis, 'twas: 't + is, was
    *_rules(rf"[yY]{_APOS}", context=_L),
    *_rules(r"(?i:https?):\/\/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-]"),
    *_rules(
        r"(?:(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},\-_$:/]+\.)+"
        r"(?i:com|net|org|edu)))(?:\/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?"
    ),
    *_rules(_EMAIL),
    *_rules(_REDAUX, emit=_right_quote, context=r"[^A-Za-z]|\Z"),
    *_rules(rf"(?i:n){_APOSETC}(?i:t)", emit=_right_quote),
    *_rules(r"\d{1,2}[\-\/]\d{1,2}[\-\/]\d{2,4}"),
    *_rules(r"[\-+]?\d+", r"[\-+]?\d*(?:[.:,\u00ad\u066b\u066c]\d+)+", emit=_without_soft_hyphens),
    *_rules("[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)"),
    *_rules(f"[{''.join(_FRACTIONS)}]", emit=lambda text: [_FRACTIONS[text]]),
    *_rules(r"(?:\d{1,4}[- \u00a0])?\d{1,4}(?:\\?\/|\u2044)\d{1,4}", emit=_nbsp),
    *_rules(
        r"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-",
        rf"(?i:C\.D\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls|Cap{_APOS}n|c{_APOS}est|C\+\+)",
        emit=_amp,
    ),
    *_rules(rf"{_L}{_LD}*(?:[.!?]{_L}{_LD}*)+"),
    *_rules(rf"{_THING_PART}(?:[-_\u058a\u2010\u2011]{_THING_PART})*"),
    *_rules(r"[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+", emit=_amp),
    *_rules(r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?\/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"),
    *_rules(rf"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:[A-Za-z0-9\u00ad]+|{_ACRO}\.))+"),
    *_rules(r"[A-Z]*\$", "#"),
    *_rules(rf"{_ACRO}\.", emit=_period_again, context=rf"{_SPACENL}+(?:{_SENTEND_WORDS}){_SPACENL}"),
    *_rules(r"[A-Za-z]\.", emit=lambda text: [text[0], "."], context=rf"{_SPACENL}+(?:{_SENTEND_WORDS}){_SPACENL}"),
    *_rules(_ABBREV1, emit=_period_again, context=rf"{_SPACENL}(?:{_SPACENL}|[A-Z]|{_SGML})"),
    *_rules(_ABBREV1),
    *_rules(_ABBREV3, context=rf"{_SPACE}+\d"),
    *_rules(*(rf"{alternative}\." for alternative in _ABBREV4)),
    *_rules(*_ABBREV4, context=_SPACE),
    *_rules(_ACRO, context=_SPACENL),
    *_rules(r"'[0-9][0-9]", context=_SPACENL),
    *_rules(rf"{_L}+\.", context=r"[,;:]"),
    *_rules(r"(?:\([0-9]{3}\)[ \u00a0]?|[0-9]{3}[\- \u00a0.])[0-9]{3}[\- \u00a0.][0-9]{4}", emit=_phone),
    *_rules(r"\"", "&quot;", emit=_left_quote, context=r"[A-Za-z0-9$]"),
    *_rules(r"\"", "&quot;", emit=_right_quote),
    *_rules(r"\+", "[%&\u2030\u2031]", r"[~^|\\]", r"[<>]", "<<", ">>", "/"),
    *_rules("&lt;", "&gt;", emit=lambda text: [_ENTITY_BRACKETS[text]]),
    *_rules(_SMILEY, emit=_smiley, context=r"[^A-Za-z0-9]|\Z"),
    *_rules(r"[<>^=\-]_[<>^=\-]"),
    *_rules(r"#" + _L + "+"),
    *_rules(r"[()\[\]{}]", emit=lambda text: [_BRACKETS[text]]),
    *_rules(r"-+", emit=lambda text: ["-" if len(text) == 1 else "--"]),
    *_rules("\\.{3,5}", "(?:\\.[ \u00a0]){2,4}\\.", "[\u0085\u2026]", emit=lambda text: ["..."]),
    *_rules(r"@[A-Za-z_][A-Za-z0-9_]*"),
    *_rules(r"@+", r"#+", r"_+", r"\*+", r"[,;:]", r"\.", r"[?!]+", r"="),
    *_rules(*_QUOTES, emit=_left_quote, context=rf"{_L}{{2}}"),
    *_rules(*_QUOTES, emit=_right_quote),
    *_rules(f"[{re.escape(''.join(_SYMBOL_OF))}]", emit=lambda text: [_SYMBOL_OF[text]]),
]
_SPACES = re.compile(r"(?:[^\S\n]|[\u00a0\u2000-\u200a\u3000]|&nbsp;)+")
# Fast path: an ASCII word followed by a space, a newline or the end is a token of its own under every rule
# (none of the rules that could match more reaches past a space after letters), except these, which split.
_PLAIN_WORD = re.compile(r"[A-Za-z]+(?= |\n|\Z)")
_SPLIT_WORDS = frozenset(("cannot", "gonna", "gotta", "lemme", "gimme", "wanna"))


def ptb_lines(text: str) -> list[list[str]]:
    """PTBTokenizer 3.4.1's tokens (``-preserveLines``, before lower-casing) of each line of ``text``.

    The whole text is scanned at once, as the Java tokenizer reads its input file: whether an acronym ending a line
    gets an extra "." depends on the next line (a capital letter there marks a sentence end).
    """
    lines: list[list[str]] = [[]]
    text = text.translate(_UNKNOWN)
    position = 0
    end = len(text)
    while position < end:
        space = _SPACES.match(text, position)
        if space:
            position = space.end()
            continue
        if text[position] == "\n":
            lines.append([])
            position += 1
            continue
        plain = _PLAIN_WORD.match(text, position)
        if plain and plain.group().lower() not in _SPLIT_WORDS:
            lines[-1].append(plain.group())
            position = plain.end()
            continue
        best: tuple[int, _Rule, str] | None = None
        for rule in _RULES:
            match = rule.pattern.match(text, position)
            if not match or match.end() == position:
                continue
            length = match.end() - position
            if rule.context is not None:
                after = rule.context.match(text, match.end())
                if not after:
                    continue
                length += after.end() - match.end()
            if best is None or length > best[0]:
                best = (length, rule, match.group())
        if best is None:
            position += 1  # an untokenizable character: deleted, as the lexer's default "firstDelete" does
            continue
        _, rule, matched = best
        lines[-1].extend(rule.emit(matched))
        position += rule.keep(matched) if rule.keep else len(matched)
    return lines


def _without_punctuation(tokens: list[str]) -> str:
    return " ".join(token for token in (t.lower() for t in tokens) if token not in PUNCTUATIONS)


def coco_tokenize_batch(texts: Sequence[str]) -> list[str]:
    """Texts as pycocoevalcap's ``PTBTokenizer.tokenize`` returns them for one call with these texts in this order.

    Each text is one line of the tokenizer's input (newlines inside a text become spaces); each result is its PTB
    tokens, lower-cased, with the punctuation tokens dropped, joined by single spaces.
    """
    if not texts:
        return []
    lines = ptb_lines("\n".join(text.replace("\n", " ") for text in texts))
    return [_without_punctuation(tokens) for tokens in lines]


def coco_tokenize(text: str) -> str:
    """One caption tokenized alone, as :func:`coco_tokenize_batch` does for a batch of one.

    'The dog's ball (red) isn't yellow-suited.' -> "the dog 's ball -lrb- red -rrb- is n't yellow-suited"
    """
    return coco_tokenize_batch([text])[0]
