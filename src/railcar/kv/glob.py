"""Redis's glob-style pattern matching (``stringmatchlen``), for KEYS, SCAN and CONFIG GET."""

from __future__ import annotations

from typing import Final

_SPECIAL: Final = frozenset(b"*?[\\")


def _signed(byte: int) -> int:
    """A byte as C's (signed) char, which Redis compares in ranges."""
    return byte - 256 if byte > 127 else byte


def _lower(byte: int) -> int:
    return byte + 32 if 0x41 <= byte <= 0x5A else byte


def _match(pattern: bytes, p: int, string: bytes, s: int, nocase: bool, skip: list[bool]) -> bool:
    plen, slen = len(pattern), len(string)
    while p < plen and s < slen:
        char = pattern[p]
        if char == 0x2A:  # '*'
            while p + 1 < plen and pattern[p + 1] == 0x2A:
                p += 1
            if p + 1 == plen:
                return True
            while s < slen:
                if _match(pattern, p + 1, string, s, nocase, skip):
                    return True
                if skip[0]:
                    return False
                s += 1
            skip[0] = True  # no later start can match: earlier stars need not try longer spans
            return False
        if char == 0x3F:  # '?'
            s += 1
        elif char == 0x5B:  # '['
            p += 1
            negate = p < plen and pattern[p] == 0x5E  # '^'
            if negate:
                p += 1
            matched = False
            target = string[s]
            while True:
                if p < plen and pattern[p] == 0x5C and plen - p >= 2:
                    p += 1
                    if pattern[p] == target:
                        matched = True
                elif p < plen and pattern[p] == 0x5D:  # ']'
                    break
                elif p >= plen:
                    p -= 1
                    break
                elif plen - p >= 3 and pattern[p + 1] == 0x2D:  # a range 'a-z'
                    low, high = _signed(pattern[p]), _signed(pattern[p + 2])
                    if low > high:
                        low, high = high, low
                    code = _signed(target)
                    if nocase:
                        code, low, high = (_signed(_lower(x % 256)) for x in (code, low, high))
                    p += 2
                    if low <= code <= high:
                        matched = True
                elif pattern[p] == target or (nocase and _lower(pattern[p]) == _lower(target)):
                    matched = True
                p += 1
            if negate:
                matched = not matched
            if not matched:
                return False
            s += 1
        else:
            if char == 0x5C and plen - p >= 2:  # backslash: the next byte literally
                p += 1
                char = pattern[p]
            if char != string[s] and not (nocase and _lower(char) == _lower(string[s])):
                return False
            s += 1
        p += 1
        if s == slen:
            while p < plen and pattern[p] == 0x2A:
                p += 1
            break
    return p == plen and s == slen


def match(pattern: bytes, string: bytes, nocase: bool = False) -> bool:
    """True if ``string`` matches the glob ``pattern`` the way Redis matches it."""
    if pattern == b"*":
        return True
    if not _SPECIAL.intersection(pattern):
        return pattern == string if not nocase else pattern.lower() == string.lower()
    return _match(pattern, 0, string, 0, nocase, [False])
