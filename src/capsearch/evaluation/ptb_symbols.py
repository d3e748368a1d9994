"""Character classes of the Stanford PTBTokenizer 3.4.1 jar beyond ASCII, read off the jar itself.

Each character of Unicode's punctuation, symbol and other-numeral categories (U+0080 to U+FFFF) was put between words
("a X b", "a XX b", "aXb") and tokenized by the jar pycocoevalcap runs (``tests/ptb_corpus.py`` does it again and
``tests/test_evaluation_ptb_tokenizer.py`` checks this table against the live jar):

* :data:`SYMBOL_RANGES`: a token of its own, each time it appears (``©©`` is two tokens);
* :data:`NORMALIZED`: the same, but written otherwise (currency: ``£`` is ``#``, ``€`` is ``$``; quotes, dashes);
* :data:`WORD_RANGES`: taken into words as letters are (modifier letters, Armenian and Arabic marks);
* anything else in those categories matches no rule of the lexer and is deleted ("untokenizable"), except what
  :mod:`capsearch.evaluation.ptb_tokenizer`'s own rules take (ASCII, quotes, dashes, fractions, superscripts).
"""

SYMBOL_RANGES = (
    (0x00A1, 0x00A1),
    (0x00A5, 0x00A9),
    (0x00AC, 0x00AC),
    (0x00AE, 0x00B4),
    (0x00B6, 0x00B9),
    (0x00BF, 0x00BF),
    (0x00D7, 0x00D7),
    (0x00F7, 0x00F7),
    (0x037E, 0x037E),
    (0x0387, 0x0387),
    (0x0589, 0x0589),
    (0x05BE, 0x05BE),
    (0x05C0, 0x05C0),
    (0x05C3, 0x05C3),
    (0x05C6, 0x05C6),
    (0x05F3, 0x05F4),
    (0x0606, 0x060C),
    (0x061B, 0x061B),
    (0x061E, 0x061F),
    (0x066A, 0x066A),
    (0x066D, 0x066D),
    (0x06D4, 0x06D4),
    (0x0700, 0x070D),
    (0x07F6, 0x07F8),
    (0x0964, 0x0965),
    (0x0E3F, 0x0E3F),
    (0x0E4F, 0x0E4F),
    (0x1FBD, 0x1FBD),
    (0x2016, 0x2017),
    (0x201A, 0x201A),
    (0x201E, 0x2023),
    (0x2030, 0x2038),
    (0x203B, 0x203B),
    (0x203E, 0x2042),
    (0x2044, 0x2044),
    (0x2070, 0x2070),
    (0x2074, 0x207E),
    (0x2080, 0x208E),
    (0x20A4, 0x20A4),
    (0x2100, 0x2101),
    (0x2103, 0x2106),
    (0x2108, 0x2109),
    (0x2114, 0x2114),
    (0x2116, 0x2118),
    (0x211E, 0x2123),
    (0x2125, 0x2125),
    (0x2127, 0x2127),
    (0x2129, 0x2129),
    (0x212E, 0x212E),
    (0x213A, 0x213B),
    (0x2140, 0x2144),
    (0x214A, 0x214D),
    (0x214F, 0x214F),
    (0x2155, 0x215E),
    (0x2190, 0x2426),
    (0x2440, 0x244A),
    (0x2460, 0x2B73),
    (0x2B76, 0x2B95),
    (0x2B97, 0x2BFF),
    (0x3001, 0x3002),
    (0x3012, 0x3012),
    (0x30FB, 0x30FB),
    (0xFF01, 0xFF0F),
    (0xFF1A, 0xFF20),
    (0xFF3B, 0xFF40),
    (0xFF5B, 0xFF65),
    (0xFFE0, 0xFFE1),
    (0xFFE5, 0xFFE6),
)
NORMALIZED = {
    "¢": "cents",  # U+00A2
    "£": "#",  # U+00A3
    "¤": "$",  # U+00A4
    "«": "``",  # U+00AB
    "\xad": "-",  # U+00AD
    "»": "''",  # U+00BB
    "¼": "1/4",  # U+00BC
    "½": "1/2",  # U+00BD
    "¾": "3/4",  # U+00BE
    "–": "--",  # U+2013
    "—": "--",  # U+2014
    "―": "--",  # U+2015
    "‘": "`",  # U+2018
    "’": "'",  # U+2019
    "‛": "`",  # U+201B
    "“": "``",  # U+201C
    "”": "''",  # U+201D
    "…": "...",  # U+2026
    "‹": "`",  # U+2039
    "›": "'",  # U+203A
    "₠": "$",  # U+20A0
    "€": "$",  # U+20AC
    "⅓": "1/3",  # U+2153
    "⅔": "2/3",  # U+2154
}
WORD_RANGES = (
    (0x02C2, 0x02C5),
    (0x02D2, 0x02DF),
    (0x02E5, 0x02EB),
    (0x02ED, 0x02ED),
    (0x02EF, 0x02FF),
    (0x0375, 0x0375),
    (0x0384, 0x0385),
    (0x03F6, 0x03F6),
    (0x055A, 0x055F),
    (0x06DE, 0x06DE),
    (0x06E9, 0x06E9),
    (0x06FD, 0x06FE),
)
