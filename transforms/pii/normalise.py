"""The normalised view of a text, on which the detectors also run, and its map back to the text.

People paste PII in shapes the detectors' ASCII patterns do not see: a full-width at sign
(U+FF20), digits from another script, a non-breaking or zero-width space inside a card number,
an address encoded for a URL (``%40``) or for HTML (``&#64;``, ``&commat;``), an escaped
``\\u0040``, or written ``jane [at] example [dot] com``. ``view_of`` returns the text with those
undone, and for each character of the view the span of the original it came from, so a finding
on the view redacts exactly the original characters it stands for (an encoded ``%40`` is
redacted whole, a zero-width space inside a match with it).

What the view changes:

* every non-ASCII character whose NFKC form is ASCII becomes that form (full-width letters,
  digits and punctuation, the full-width at sign, mathematical alphanumerics, superscripts);
  other scripts' decimal digits become ASCII digits; dashes become ``-``; space separators
  (NBSP, thin and ideographic spaces) become a space; line and paragraph separators a line
  break; format characters (zero-width spaces and joiners, the soft hyphen, bidi controls,
  tag characters) are dropped;
* percent-encoded printable ASCII (``%40``), HTML character references (``&#64;``, ``&#x40;``,
  named ones such as ``&commat;`` and ``&nbsp;``), ``\\uXXXX`` and ``\\xXX`` escapes are
  decoded;
* ``[at]``, ``(at)``, ``{at}``, ``<at>`` and the same with ``dot`` (any case, spaces around
  them absorbed) become ``@`` and ``.``.

A text needs a view only when it holds one of these: the engine's hyperscan pass reports the
ASCII triggers (``TRIGGERS``), and a second pass over a non-ASCII text's bytes the others
(``ViewCheck``); an ASCII text without triggers costs nothing more. NFKC is applied per
character, not to the whole text, so that the map back stays exact; compositions across
characters do not matter to the detectors, whose patterns are ASCII.
"""

from __future__ import annotations

import functools
import html.entities
import re
import sys
import unicodedata
from typing import NamedTuple

__all__ = ["TRIGGERS", "View", "ViewCheck", "char_map", "needs_view", "view_of"]

# Supplementary-plane blocks that hold ASCII look-alikes or invisible characters; the BMP is
# scanned whole. (Scanning every plane at import would take about a second.)
_EXTRA_BLOCKS = (
    (0x1D400, 0x1D800),  # mathematical alphanumerics
    (0x1F100, 0x1F200),  # enclosed alphanumerics
    (0x1FBF0, 0x1FBFA),  # segmented digits
    (0xE0000, 0xE0080),  # tag characters (invisible "ASCII smuggling")
)
_DASHES = "\u2212\u2796\ufe58"  # minus signs and a dash outside category Pd


def _mapping(char: str) -> str | None:
    """What ``char`` (not ASCII) becomes in the view, or None when it stays as it is."""
    category = unicodedata.category(char)
    if category == "Cf":
        return ""
    if category == "Zs":
        return " "
    if category in ("Zl", "Zp") or char == "\x85":
        return "\n"
    if category == "Pd" or char in _DASHES:
        return "-"
    if category == "Nd":
        return str(unicodedata.decimal(char))
    normal = unicodedata.normalize("NFKC", char)
    return normal if normal != char and normal.isascii() else None


@functools.cache
def char_map() -> dict[str, str]:
    """Every non-ASCII character the view changes, and what it becomes."""
    codepoints = [*range(0x80, 0xD800), *range(0xE000, 0x10000)]
    for low, high in _EXTRA_BLOCKS:
        codepoints += range(low, high)
    return {char: mapped for cp in codepoints if (mapped := _mapping(char := chr(cp))) is not None}


def _char_class(chars: list[str]) -> str:
    """A regex character class of ``chars``, as ranges."""
    codepoints = sorted(map(ord, chars))
    parts, low = [], codepoints[0]
    for previous, current in zip(codepoints, [*codepoints[1:], -1], strict=True):
        if current != previous + 1:
            parts.append(
                re.escape(chr(low)) + ("-" + re.escape(chr(previous)) if previous > low else "")
            )
            low = current
    return "[" + "".join(parts) + "]"


_OBFUSCATED = r"[ \t]*[\[({<][ \t]*(?i:(?P<word>at|dot))[ \t]*[\])}>][ \t]*"
_ENCODED = re.compile(
    r"%(?P<pct>[2-7][0-9A-Fa-f])"
    r"|&\#(?:(?P<dec>\d{1,7})|[xX](?P<hex>[0-9A-Fa-f]{1,6}));?"
    r"|&(?P<name>[A-Za-z][A-Za-z0-9]{1,31};)"
    r"|\\(?:u(?P<u>[0-9A-Fa-f]{4})|x(?P<x>[0-9A-Fa-f]{2}))"
    rf"|{_OBFUSCATED}"
)

# The ASCII shapes ``view_of`` decodes, as lookaround-free patterns (hyperscan and ``re``
# syntax) that find at least every place it decodes: the engine adds them to its locator pass.
TRIGGERS: tuple[str, ...] = (
    r"%[2-7][0-9A-Fa-f]",
    r"&#",
    r"&[A-Za-z][A-Za-z0-9]{1,31};",
    r"\\[ux][0-9A-Fa-f]{2}",
    r"(?i)[\[({<][ \t]*(?:at|dot)[ \t]*[\])}>]",
)
# Characters that only separate (spaces, dashes, line separators) or vanish (format
# characters): they need a view only next to something a value is made of.
_WEAK = frozenset(" -\n")
_TOKEN_NEIGHBOUR = frozenset("0123456789@+.()abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@functools.cache
def _non_ascii() -> tuple[re.Pattern[str], re.Pattern[str], frozenset[str]]:
    """The characters of the map in the BMP (one class ``re`` scans fast), those outside it,
    and the weak ones."""
    mapping = char_map()
    chars = list(mapping)
    return (
        re.compile(_char_class([c for c in chars if ord(c) < 0x10000])),
        re.compile(_char_class([c for c in chars if ord(c) >= 0x10000])),
        frozenset(c for c, mapped in mapping.items() if mapped == "" or mapped in _WEAK),
    )


def _size_formula_holds() -> bool:
    """CPython stores a string at 1, 2 or 4 bytes per character, the widest its characters
    need (PEP 393), which ``sys.getsizeof`` shows; checked, not assumed."""
    try:
        wide, narrow, latin1 = (sys.getsizeof(c) for c in ("\U00010000", "\u0100", "\xe9"))
        return all(
            sys.getsizeof("\U00010000" * n) == wide + 4 * (n - 1)
            and sys.getsizeof("\u0100" * n) == narrow + 2 * (n - 1)
            and sys.getsizeof("\xe9" * n) == latin1 + n - 1
            for n in (2, 7, 100)
        )
    except TypeError:  # an interpreter without getsizeof
        return False


_WIDE_BASE = sys.getsizeof("\U00010000") - 4 if _size_formula_holds() else None
_LATIN1_BASE = sys.getsizeof("\xe9") - 1 if _size_formula_holds() else None


def _has_wide_chars(text: str) -> bool:
    if _WIDE_BASE is None:
        return any(ord(c) >= 0x10000 for c in text)
    return sys.getsizeof(text) == _WIDE_BASE + 4 * len(text)


def _is_latin1(text: str) -> bool:
    """Whether every character of the non-ASCII ``text`` is below U+0100 (stored one byte per
    character, which ``sys.getsizeof`` shows in O(1))."""
    if _LATIN1_BASE is None:
        return max(text) < "\u0100"
    return sys.getsizeof(text) == _LATIN1_BASE + len(text)


def needs_view(text: str) -> bool:
    """Whether ``text`` holds a non-ASCII character the view changes that may matter: any
    but a space, dash or format character, and those only next to a letter, digit or one of
    ``@+.()``. (The ASCII shapes are found by ``TRIGGERS``.) About 5 µs per KB of non-ASCII
    text, nothing for ASCII text."""
    if text.isascii():
        return False
    bmp, wide, weak = _non_ascii()
    for match in bmp.finditer(text):
        position = match.start()
        if (
            match.group() not in weak
            or text[position - 1 : position] in _TOKEN_NEIGHBOUR
            or text[position + 1 : position + 2] in _TOKEN_NEIGHBOUR
        ):
            return True
    return _has_wide_chars(text) and wide.search(text) is not None


class ViewCheck:
    """``needs_view`` made cheap with hyperscan: one pass over a non-ASCII text's UTF-8 bytes
    for the byte sequences of every character the view changes (a literal set, which
    hyperscan matches several times faster than ``re`` checks a character class); only a
    text holding one pays for ``needs_view`` itself, which gives the answer. Not thread-safe
    (the scan's scratch space): one per engine. ``hyperscan`` is the module, passed in so that
    this module imports without it.
    """

    def __init__(self, hyperscan) -> None:
        chars = list(char_map())
        self._hyperscan = hyperscan
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._db.compile(
            expressions=[
                "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8")).encode("ascii")
                for char in chars
            ],
            ids=list(range(len(chars))),
            elements=len(chars),
            flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(chars),
        )

    def __call__(self, text: str) -> bool:
        if text.isascii():
            return False
        if _is_latin1(text):  # most accented Western text: eight characters to look for
            # Eight substring searches written out (a generator costs more than they do).
            return (
                "\xa0" in text
                or "\xad" in text
                or "\x85" in text
                or "\xaa" in text
                or "\xb2" in text
                or "\xb3" in text
                or "\xb9" in text
                or "\xba" in text
            ) and needs_view(text)
        try:
            self._db.scan(text.encode("utf-8", "surrogatepass"), match_event_handler=_stop)
        except self._hyperscan.ScanTerminated:
            return needs_view(text)
        return False


# The characters below U+0100 the view changes (NBSP, soft hyphen, ª º ¹ ² ³, NEL).
_LATIN1_MAPPED = "\x85\xa0\xaa\xad\xb2\xb3\xb9\xba"


def _stop(*_match: object) -> bool:
    return True  # one match answers the question: stop the scan


class View(NamedTuple):
    """The normalised ``text`` and, per character of it, the original span ``[start, end)``
    it stands for (``starts[i]``, ``ends[i]``)."""

    text: str
    starts: list[int]
    ends: list[int]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of the view's ``text[start:end]`` (``end > start``)."""
        return self.starts[start], self.ends[end - 1]


def _decoded(match: re.Match[str]) -> str | None:
    """What a match of an encoding or a mapped character stands for, or None to keep it."""
    group = match.lastgroup
    if group is None:  # a single character of the map
        return char_map()[match.group()]
    value = match.group(group)
    if group == "word":
        return "@" if value.lower() == "at" else "."
    if group == "name":
        char = html.entities.html5.get(value)
    else:
        code = int(value, 10 if group == "dec" else 16)
        if group == "pct" and code == 0x7F:
            return None
        char = chr(code) if code < 0x110000 and not 0xD800 <= code < 0xE000 else None
    if char is None or len(char) != 1:
        return None
    if char.isascii():
        return char if char.isprintable() or char in "\t\n" else None
    return char_map().get(char, char)


def _between_digits(text: str, start: int, end: int) -> bool:
    """Whether the dropped character ``text[start:end]`` is the first of a run of dropped
    characters between two digits."""
    if not text[start - 1 : start].isdigit():
        return False
    dropped = char_map()
    while end < len(text) and dropped.get(text[end]) == "":
        end += 1
    return text[end : end + 1].isdigit()


def _matches(text: str, encoded: bool) -> list[re.Match[str]]:
    """The places ``view_of`` may change, in order (they never overlap)."""
    found: list[re.Match[str]] = []
    if not text.isascii():
        bmp, wide, _ = _non_ascii()
        found += bmp.finditer(text)
        if _has_wide_chars(text):
            found += wide.finditer(text)
    if encoded:
        found += _ENCODED.finditer(text)
    found.sort(key=lambda match: match.start())
    return found


def view_of(text: str, *, encoded: bool = True) -> View | None:
    """The normalised view of ``text``, or None when it would be ``text`` itself.

    ``encoded=False`` skips the ASCII encodings (the caller knows there is none: no
    ``TRIGGERS`` match), which is most of the cost of a long text.
    """
    starts: list[int] = []
    ends: list[int] = []
    parts: list[str] = []
    position = 0
    for match in _matches(text, encoded):
        replacement = _decoded(match)
        if replacement is None:
            continue
        start, end = match.span()
        if not replacement and _between_digits(text, start, end):
            replacement = " "  # "4111<ZWSP>1111": an invisible separator of digit groups
        if start > position:
            parts.append(text[position:start])
            starts += range(position, start)
            ends += range(position + 1, start + 1)
        parts.append(replacement)
        starts += [start] * len(replacement)
        ends += [end] * len(replacement)
        position = end
    if not parts:
        return None
    parts.append(text[position:])
    starts += range(position, len(text))
    ends += range(position + 1, len(text) + 1)
    return View("".join(parts), starts, ends)
