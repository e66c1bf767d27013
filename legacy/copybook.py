"""COBOL copybook parser and record layout for mainframe legacy files.

``parse_copybook`` turns the text of a copybook (the IBM-style subset used by
record layouts) into a :class:`Copybook`: a flat list of elementary
:class:`Field` s with byte offsets, lengths and numeric semantics, plus the
nested group tree used for JSON output.  Framing, vectorized decoding and
encoding of record data live in :mod:`legacy.records` and are re-exported here,
so callers only ever ``from legacy.copybook import ...``.

Supported source forms
    Fixed format (columns 1-6 sequence area, column 7 indicator ``*``/``/``
    comment, ``D`` debug line (skipped), ``-`` literal continuation, columns
    73+ ignored) and free format (no sequence area, ``*>`` comments).  The
    form is detected: fixed if every non-blank line has only blanks/digits in
    columns 1-6 and a valid indicator in column 7.

Supported entries
    Levels 01-49 and 77 (data), 88 (condition names: parsed and ignored), 66
    (RENAMES: skipped).  Clauses PIC/PICTURE, USAGE (DISPLAY, COMP,
    COMPUTATIONAL, BINARY, COMP-4, COMP-5, COMP-3, PACKED-DECIMAL, COMP-1,
    COMP-2, INDEX; the word USAGE is optional; a group's USAGE applies to its
    children), SIGN LEADING/TRAILING [SEPARATE], OCCURS n / OCCURS m TO n
    DEPENDING ON, REDEFINES, VALUE (ignored), INDEXED BY / ASCENDING /
    DESCENDING KEY (ignored), SYNC, JUSTIFIED, BLANK WHEN ZERO, GLOBAL,
    EXTERNAL.  ``SYNC`` is accepted but no slack bytes are inserted.  A
    copybook whose first entry is not an 01 (e.g. starts at level 05) gets a
    synthetic record named after the source file.

Layout rules
    Binary (COMP/COMP-4/BINARY/COMP-5, INDEX): 1-4 digits -> 2 bytes, 5-9 -> 4,
    10-18 -> 8.  Packed: ``digits // 2 + 1`` bytes.  Zoned: one byte per digit
    (+1 for SIGN SEPARATE).  ``P`` scaling: ``9(3)PPP`` has scale -3,
    ``PPP99`` / ``VPPP99`` scale 5.  At most 31 digits (18 for binary).
    FILLER occupies storage but is never output (neither are the items of a
    FILLER group).  OCCURS DEPENDING ON must be the last item of the record,
    with its counter an elementary numeric item before the table.

Output names
    COBOL name upper-cased with ``-`` -> ``_``; occurrences get ``_1``, ``_2``
    (nested: ``_1_2``); a leaf name used under several groups is qualified with
    its parent group name (``INSURED_CITY``), then grandparent, until unique.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field as dc_field
from pathlib import PurePath
from typing import Any, Iterator

import pyarrow as pa

from legacy.errors import InputError

# re-exported from legacy.records (loaded lazily, see __getattr__)
_RECORDS_API = frozenset(
    {
        "DecodeResult",
        "FramingError",
        "QUARANTINE_SCHEMA",
        "REASON_CODES",
        "RecordBlock",
        "decimal_array",
        "decode_block",
        "decode_file",
        "encode_matrix",
        "encode_records",
        "frame_records",
        "iter_record_blocks",
        "to_json_records",
    }
)

__all__ = ["Copybook", "CopybookError", "Field", "Node", "OdoInfo", "OdoTable", "parse_copybook", *sorted(_RECORDS_API)]


def __getattr__(name: str) -> Any:
    """Re-export the record API of :mod:`legacy.records` without an import cycle."""
    if name in _RECORDS_API:
        from legacy import records

        return getattr(records, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _RECORDS_API)


MAX_DIGITS = 31
MAX_BINARY_DIGITS = 18


# --------------------------------------------------------------------------- errors


class CopybookError(InputError):
    """A copybook that cannot be parsed; names source, 1-based line and column."""

    def __init__(self, source: str, line: int, column: int, message: str) -> None:
        self.source = source
        self.message = message
        super().__init__(message, file=source, line=line, column=column)


# --------------------------------------------------------------------------- public layout types


@dataclass(frozen=True)
class OdoInfo:
    """Where a field sits in an OCCURS DEPENDING ON table."""

    counter: str  # output name of the counter field
    index: int  # 1-based occurrence of the ODO table this field belongs to
    min_count: int
    max_count: int


@dataclass(frozen=True)
class OdoTable:
    """The record's (single) OCCURS DEPENDING ON table."""

    name: str  # output name of the table item
    counter: str  # output name of the counter field
    counter_index: int  # index of the counter in Copybook.fields
    offset: int  # byte offset of occurrence 1
    element_length: int  # bytes per occurrence
    min_count: int
    max_count: int

    def record_length(self, count: int) -> int:
        """Record length the copybook implies for ``count`` occurrences."""
        return self.offset + count * self.element_length


@dataclass(frozen=True)
class Field:
    """One elementary item (one occurrence of it, if under OCCURS)."""

    name: str  # output name (FILLER for filler)
    offset: int
    length: int
    kind: str  # text | zoned | packed | binary | float | edited
    digits: int = 0
    scale: int = 0
    signed: bool = False
    sign_leading: bool = False
    sign_separate: bool = False
    float_bytes: int = 0
    odo: OdoInfo | None = None
    in_redefines: bool = False
    line: int = 0
    # --- extra detail used by decoding / encoding
    cobol_name: str = ""  # as written (upper case), e.g. POL-NUMBER
    base_name: str = ""  # output name without the occurrence suffix
    occurs_index: tuple[int, ...] = ()  # 1-based occurrence numbers, outermost first
    usage: str = "DISPLAY"  # DISPLAY | COMP | COMP-5 | COMP-3 | COMP-1 | COMP-2 | INDEX
    picture: str = ""  # picture as written ('' for COMP-1/COMP-2/INDEX)
    edit_symbols: tuple[str, ...] = ()  # expanded picture symbols of an edited field
    blank_when_zero: bool = False
    filler: bool = False
    redefines_role: int = 0  # 0 none, 1 in a redefined item, 2 in a redefining item

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("zoned", "packed", "binary", "edited")

    @property
    def native_binary(self) -> bool:
        """COMP-5 / INDEX: the full binary range is valid, not just the PIC digits."""
        return self.usage in ("COMP-5", "INDEX")

    @property
    def precision(self) -> int:
        """Decimal precision of the decoded value (digits, widened by P scaling).

        Binary fields are decoded in full (the stored value may exceed the PIC
        under TRUNC(BIN)), so a scaled or COMP-5 binary field gets the precision
        its storage can hold: 5, 10, 19 (signed) / 20 (unsigned) digits.
        """
        if self.kind in ("float", "text"):
            return 0
        digits = self.digits
        if self.kind == "binary" and (self.scale != 0 or self.native_binary):
            digits = max(digits, {2: 5, 4: 10, 8: 19 if self.signed else 20}[self.length])
        if self.scale < 0:
            return digits - self.scale
        return max(digits, self.scale)

    @property
    def arrow_type(self) -> pa.DataType:
        """Type of this field's column in a decoded table.

        text -> string; float -> float64; scale > 0 -> decimal128(precision, scale);
        integers -> int64, or decimal128(precision, 0) beyond 18 digits (and for
        unsigned 8-byte COMP-5, which can exceed int64).
        """
        if self.kind == "text":
            return pa.string()
        if self.kind == "float":
            return pa.float64()
        p = self.precision
        if self.scale > 0:
            return pa.decimal128(p, self.scale)
        if self.kind == "binary" and self.scale == 0:
            if self.length == 8 and self.native_binary and not self.signed:
                return pa.decimal128(20, 0)
            return pa.int64()
        return pa.int64() if p <= 18 else pa.decimal128(p, 0)


@dataclass(frozen=True)
class Node:
    """A node of the group tree (FILLER omitted), used for nested JSON output.

    ``name`` is the output name without occurrence suffix (for a leaf: the
    Field base name, possibly qualified).  ``occurs`` is the maximum number of
    occurrences for an OCCURS item, ``depending_on`` the output name of the ODO
    counter.  A leaf's column for occurrence indices ``(i, j)`` is
    ``column((i, j))``.
    """

    name: str
    is_group: bool
    occurs: int | None = None
    min_occurs: int | None = None
    depending_on: str | None = None
    children: tuple["Node", ...] = ()
    line: int = 0

    def column(self, indices: tuple[int, ...] = ()) -> str:
        """Output column of a leaf for the given occurrence indices (outermost first)."""
        return self.name + "".join(f"_{i}" for i in indices)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description of the tree."""
        d: dict[str, Any] = {"name": self.name, "type": "group" if self.is_group else "field"}
        if self.occurs is not None:
            d["occurs"] = self.occurs
        if self.depending_on is not None:
            d["min_occurs"] = self.min_occurs
            d["depending_on"] = self.depending_on
        if self.is_group:
            d["children"] = [c.to_dict() for c in self.children]
        return d


@dataclass(frozen=True, eq=False)
class Copybook:
    """A parsed record layout."""

    name: str  # output-style name of the 01 record (e.g. POLMAST_REC)
    fields: list[Field]  # elementary fields in storage order, OCCURS expanded, FILLER included
    record_length: int  # maximum record length in bytes
    min_length: int  # minimum record length (ODO at its minimum count)
    is_variable: bool  # has OCCURS DEPENDING ON
    tree: Node
    columns: list[str]  # output names (FILLER excluded), in storage order
    source: str = "<copybook>"
    odo: OdoTable | None = None

    def field(self, name: str) -> Field:
        """The field with this output name (KeyError naming close matches otherwise)."""
        for f in self.fields:
            if f.name == name and not f.filler:
                return f
        raise KeyError(f"{self.source}: no field {name!r}; columns are {', '.join(self.columns)}")

    @property
    def output_fields(self) -> list[Field]:
        """Fields that become columns (FILLER excluded), in storage order."""
        return [f for f in self.fields if not f.filler]

    @property
    def schema(self) -> pa.Schema:
        """Arrow schema of decoded tables: ``record_no`` then one column per output field."""
        return pa.schema([pa.field("record_no", pa.int64(), nullable=False)] + [
            pa.field(f.name, f.arrow_type) for f in self.output_fields
        ])

    def record_length_for(self, count: int) -> int:
        """Length a record must have for an ODO count (record_length if fixed)."""
        return self.odo.record_length(count) if self.odo else self.record_length


# --------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class _Tok:
    text: str
    line: int
    col: int
    kind: str  # word | lit | period

    @property
    def up(self) -> str:
        return self.text.upper()

    @property
    def end_col(self) -> int:
        return self.col + len(self.text)


_INDICATORS = frozenset(" *-/Dd")
_QUOTES = "'\""
_LIT_PREFIXES = frozenset("XxNnGgZzBb")


def _is_fixed_format(lines: list[str]) -> bool:
    seen = False
    for raw in lines:
        if not raw.strip():
            continue
        seen = True
        if any(not (c == " " or c.isdigit()) for c in raw[:6]):
            return False
        if len(raw) > 6 and raw[6] not in _INDICATORS:
            return False
    return seen


def _tokenize(text: str, source: str) -> list[_Tok]:
    """Split copybook text into words, literals and separator periods."""
    lines = text.splitlines()
    fixed = _is_fixed_format(lines)
    toks: list[_Tok] = []
    open_lit: dict[str, Any] | None = None  # literal continued on the next line
    for ln, raw in enumerate(lines, 1):
        raw = raw.rstrip("\r\n")
        cont = False
        if fixed:
            ind = raw[6] if len(raw) > 6 else " "
            if ind in "*/Dd":
                continue
            cont = ind == "-"
            content, base = raw[7:72], 8
        else:
            if raw.lstrip().startswith("*"):
                continue
            content, base = raw, 1
        n = len(content)
        i = 0
        if open_lit is not None:
            if not cont:
                raise CopybookError(source, open_lit["line"], open_lit["col"],
                                    "literal is not terminated: expected a closing quote or a continuation line ('-' in column 7)")
            j = content.find(open_lit["q"])
            if j < 0 or content[:j].strip():
                raise CopybookError(source, ln, base, "continuation line must start with a quote to continue the literal")
            i = j + 1
            close = _find_close(content, i, open_lit["q"])
            if close < 0:
                open_lit["text"] += content[i:]
                continue
            toks.append(_Tok(open_lit["text"] + content[i:close + 1], open_lit["line"], open_lit["col"], "lit"))
            open_lit = None
            i = close + 1
        while i < n:
            c = content[i]
            if c.isspace():
                i += 1
                continue
            if content.startswith("*>", i):
                break
            col = base + i
            if c in _QUOTES or (c in _LIT_PREFIXES and i + 1 < n and content[i + 1] in _QUOTES):
                q = c if c in _QUOTES else content[i + 1]
                start = i + 1 if c in _QUOTES else i + 2
                close = _find_close(content, start, q)
                if close < 0:
                    if fixed:
                        open_lit = {"q": q, "line": ln, "col": col, "text": content[i:]}
                        break
                    raise CopybookError(source, ln, col, "literal is not terminated: expected a closing quote on the same line")
                toks.append(_Tok(content[i:close + 1], ln, col, "lit"))
                i = close + 1
                continue
            j = i
            while j < n and not content[j].isspace() and not (content[j] in _QUOTES and j > i):
                j += 1
            word = content[i:j]
            i = j
            # separators: a period, comma or semicolon followed by a space or end of line
            if word in (",", ";"):
                continue
            if word == ".":
                toks.append(_Tok(".", ln, col, "period"))
                continue
            while word and word[-1] in ",;":
                word = word[:-1]
            if word.endswith(".") and len(word) > 1:
                toks.append(_Tok(word[:-1], ln, col, "word"))
                toks.append(_Tok(".", ln, col + len(word) - 1, "period"))
            elif word:
                toks.append(_Tok(word, ln, col, "word"))
    if open_lit is not None:
        raise CopybookError(source, open_lit["line"], open_lit["col"], "literal is not terminated: the copybook ends inside it")
    return toks


def _find_close(s: str, start: int, q: str) -> int:
    """Index of the quote closing a literal (doubled quotes are escapes), or -1."""
    j = start
    while True:
        k = s.find(q, j)
        if k < 0:
            return -1
        if k + 1 < len(s) and s[k + 1] == q:
            j = k + 2
            continue
        return k


# --------------------------------------------------------------------------- PICTURE


@dataclass(frozen=True)
class _Pic:
    text: str
    category: str  # text | numeric | edited
    symbols: tuple[str, ...]
    length: int  # display positions (numeric: count of 9s)
    digits: int
    scale: int
    signed: bool


_PIC_SYMBOLS = frozenset("AX9SVPZ*,.+-$B0/")
_EDIT_INSERT = frozenset(",B0/")


def _parse_pic(tok: _Tok, source: str) -> _Pic:
    """Expand and validate a PICTURE string; errors point at the offending symbol."""
    raw = tok.text
    s = raw.upper()

    def err(i: int, msg: str) -> CopybookError:
        return CopybookError(source, tok.line, tok.col + i, f"PIC '{raw}' {msg}")

    syms: list[str] = []
    where: list[int] = []  # index in raw of each symbol
    i = 0
    while i < len(s):
        c = s[i]
        if s.startswith("CR", i) or s.startswith("DB", i):
            if i + 2 < len(s) and s[i + 2] == "(":
                raise err(i, f"cannot repeat {s[i:i + 2]}")
            syms.append(s[i:i + 2])
            where.append(i)
            i += 2
            continue
        if c == "(":
            raise err(i, "has '(' without a symbol to repeat")
        if c not in _PIC_SYMBOLS:
            raise err(i, f"has invalid symbol '{raw[i]}' (expected X, A, 9, S, V, P or an editing symbol)")
        if i + 1 < len(s) and s[i + 1] == "(":
            k = s.find(")", i + 2)
            if k < 0:
                raise err(i + 1, "has '(' without a closing ')'")
            num = s[i + 2:k]
            if not num.isdigit() or int(num) == 0:
                raise err(i + 2, f"has repetition count '({raw[i + 2:k]})'; expected a positive integer")
            count = int(num)
            if count > 65535:
                raise err(i + 2, f"repeats '{c}' {count} times (too many)")
            syms.extend([c] * count)
            where.extend([i] * count)
            i = k + 1
        else:
            syms.append(c)
            where.append(i)
            i += 1
    if not syms:
        raise err(0, "is empty")
    present = set(syms)

    if present & {"A", "X"}:
        bad = [k for k, y in enumerate(syms) if y not in ("A", "X", "9", "B", "0", "/")]
        if bad:
            raise err(where[bad[0]], f"mixes alphanumeric (X/A) and numeric symbol '{syms[bad[0]]}'")
        return _Pic(raw, "text", tuple(syms), len(syms), 0, 0, False)

    for name in ("S", "V"):
        idx = [k for k, y in enumerate(syms) if y == name]
        if len(idx) > 1:
            raise err(where[idx[1]], f"has two {name} symbols")
    if "S" in present and syms[0] != "S":
        raise err(where[syms.index("S")], "has S that is not the first symbol")

    if present <= {"9", "S", "V", "P"}:
        body = [y for y in syms if y != "S"]
        body_where = [w for y, w in zip(syms, where) if y != "S"]
        digits = body.count("9")
        if digits == 0:
            raise err(0, "has no digit positions (9)")
        if digits > MAX_DIGITS:
            raise err(0, f"has {digits} digits; at most {MAX_DIGITS} are supported")
        pidx = [k for k, y in enumerate(body) if y == "P"]
        nine = [k for k, y in enumerate(body) if y == "9"]
        vpos = body.index("V") if "V" in body else None
        if pidx:
            if pidx != list(range(pidx[0], pidx[-1] + 1)):
                raise err(body_where[pidx[0]], "has P symbols that are not contiguous")
            if pidx[-1] < nine[0]:  # P on the left: all digits are fraction digits
                if vpos is not None and vpos > pidx[0]:
                    raise err(body_where[vpos], "has V after leading P symbols (V may only precede them)")
                scale = len(pidx) + digits
            elif pidx[0] > nine[-1]:  # P on the right: the value is scaled up
                if vpos is not None and vpos < pidx[-1]:
                    raise err(body_where[vpos], "has V before trailing P symbols")
                scale = -len(pidx)
            else:
                raise err(body_where[pidx[0]], "has P between digit positions (P must be leftmost or rightmost)")
        else:
            scale = sum(1 for k in nine if vpos is not None and k > vpos)
        if max(digits, scale) - min(scale, 0) > 38:
            raise err(0, "scales beyond 38 digits of precision")
        return _Pic(raw, "numeric", tuple(syms), digits, digits, scale, "S" in present)

    # numeric edited
    for y, w in zip(syms, where):
        if y in ("S", "P"):
            raise err(w, f"has '{y}', which is not allowed in an edited picture")
    try:
        roles = edit_roles(tuple(syms))
    except _EditError as e:
        raise err(where[e.index] if e.index < len(where) else 0, str(e)) from None
    digits = sum(1 for r in roles if r[0] in ("digit", "zsup", "float"))
    if digits > MAX_DIGITS:
        raise err(0, f"has {digits} digit positions; at most {MAX_DIGITS} are supported")
    scale = sum(1 for r in roles if r[0] in ("digit", "zsup", "float") and r[2])
    length = sum(2 if r[0] == "crdb" else 1 for r in roles)
    signed = any(r[0] in ("sign", "crdb") or (r[0] in ("float", "float_lead") and r[1] in "+-") for r in roles)
    return _Pic(raw, "edited", tuple(syms), length, digits, scale, signed)


class _EditError(Exception):
    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def edit_roles(syms: tuple[str, ...]) -> list[tuple[str, str, bool]]:
    """Classify each position of an edited numeric picture.

    Returns one ``(role, symbol, is_fraction)`` per character position (CR/DB
    is one entry of two bytes; V has none).  Roles: ``digit`` (9), ``zsup``
    (Z or *), ``float_lead`` (first symbol of a floating $/+/- string, not a
    digit), ``float`` (further floating symbols: digit positions), ``insert``
    (, B 0 /), ``point`` (.), ``sign`` (fixed + or -), ``crdb``, ``currency``
    (fixed $).  Raises ``_EditError(index, message)`` for invalid pictures.
    """
    n = len(syms)
    for name in (".", "V"):
        idx = [k for k, y in enumerate(syms) if y == name]
        if len(idx) > 1:
            raise _EditError(idx[1], f"has two '{name}' symbols")
    if "." in syms and "V" in syms:
        raise _EditError(syms.index("V"), "has both '.' and V")
    crdb = [k for k, y in enumerate(syms) if y in ("CR", "DB")]
    if len(crdb) > 1 or (crdb and crdb[0] != n - 1):
        raise _EditError(crdb[-1], "has CR/DB that is not the last symbol")
    plus = [k for k, y in enumerate(syms) if y == "+"]
    minus = [k for k, y in enumerate(syms) if y == "-"]
    if plus and minus:
        raise _EditError(max(plus[0], minus[0]), "has both '+' and '-'")
    signs = plus or minus
    if signs and crdb:
        raise _EditError(signs[0], "has both a sign symbol and CR/DB")
    dollars = [k for k, y in enumerate(syms) if y == "$"]
    if "Z" in syms and "*" in syms:
        raise _EditError(syms.index("*"), "mixes Z and * suppression")

    fixed_sign: set[int] = set()
    float_sym: str | None = None
    float_pos: list[int] = []
    if len(signs) == 1:
        k = signs[0]
        if k not in (0, n - 1):
            raise _EditError(k, "has a sign symbol that is neither first nor last")
        fixed_sign.add(k)
    elif len(signs) > 1:
        if signs[-1] == n - 1 and len(signs) > 1 and signs[-2] != n - 2:
            # leading floating string plus a trailing sign is not valid
            raise _EditError(signs[-1], "has a floating sign string and a trailing sign")
        float_sym, float_pos = syms[signs[0]], signs
    fixed_currency: set[int] = set()
    if len(dollars) == 1:
        k = dollars[0]
        if not (k == 0 or (k == 1 and 0 in fixed_sign)):
            raise _EditError(k, "has '$' that is not at the start")
        fixed_currency.add(k)
    elif len(dollars) > 1:
        if float_sym is not None:
            raise _EditError(dollars[0], "has two floating strings ($ and sign)")
        float_sym, float_pos = "$", dollars
    if float_sym is not None:
        if "Z" in syms or "*" in syms:
            raise _EditError(float_pos[0], "mixes a floating string with Z/* suppression")
        f0, f1 = float_pos[0], float_pos[-1]
        for k in range(f0, f1 + 1):
            if syms[k] != float_sym and syms[k] not in _EDIT_INSERT:
                raise _EditError(k, f"has '{syms[k]}' inside the floating '{float_sym}' string")
        for k in range(0, f0):
            if k not in fixed_sign and k not in fixed_currency:
                raise _EditError(k, f"has '{syms[k]}' before the floating '{float_sym}' string")

    roles: list[tuple[str, str, bool]] = []
    frac = False
    seen_nine = False
    all_zsup = not any(y == "9" for y in syms) and float_sym is None
    for k, y in enumerate(syms):
        if y == "V":
            frac = True
            continue
        if y == ".":
            roles.append(("point", y, False))
            frac = True
        elif y in ("CR", "DB"):
            roles.append(("crdb", y, False))
        elif k in fixed_sign:
            roles.append(("sign", y, False))
        elif k in fixed_currency:
            roles.append(("currency", y, False))
        elif float_sym is not None and y == float_sym:
            if frac:
                raise _EditError(k, f"has floating '{y}' after the decimal point")
            roles.append(("float_lead" if k == float_pos[0] else "float", y, False))
        elif y in ("Z", "*"):
            if seen_nine:
                raise _EditError(k, f"has '{y}' after a 9")
            if frac and not all_zsup:
                raise _EditError(k, f"has '{y}' after the decimal point but 9s before it")
            roles.append(("zsup", y, frac))
        elif y == "9":
            seen_nine = True
            roles.append(("digit", y, frac))
        elif y in _EDIT_INSERT:
            roles.append(("insert", y, frac))
        elif y in ("+", "-", "$"):
            raise _EditError(k, f"has '{y}' in an invalid position")
        else:
            raise _EditError(k, f"has '{y}', which is not valid in an edited picture")
    if not any(r[0] in ("digit", "zsup", "float") for r in roles):
        raise _EditError(0, "has no digit positions")
    return roles


# --------------------------------------------------------------------------- statements


_USAGES = {
    "DISPLAY": "DISPLAY",
    "COMP": "COMP",
    "COMPUTATIONAL": "COMP",
    "BINARY": "COMP",
    "COMP-4": "COMP",
    "COMPUTATIONAL-4": "COMP",
    "COMP-5": "COMP-5",
    "COMPUTATIONAL-5": "COMP-5",
    "COMP-3": "COMP-3",
    "COMPUTATIONAL-3": "COMP-3",
    "PACKED-DECIMAL": "COMP-3",
    "COMP-1": "COMP-1",
    "COMPUTATIONAL-1": "COMP-1",
    "COMP-2": "COMP-2",
    "COMPUTATIONAL-2": "COMP-2",
    "INDEX": "INDEX",
}
_UNSUPPORTED_USAGES = frozenset(
    {"NATIONAL", "DISPLAY-1", "POINTER", "POINTER-32", "PROCEDURE-POINTER", "FUNCTION-POINTER", "OBJECT",
     "COMP-6", "COMPUTATIONAL-6", "COMP-X", "COMPUTATIONAL-X", "UTF-8"}
)
_CLAUSE_WORDS = frozenset(
    {"PIC", "PICTURE", "USAGE", "SIGN", "LEADING", "TRAILING", "OCCURS", "REDEFINES", "VALUE", "VALUES",
     "INDEXED", "ASCENDING", "DESCENDING", "SYNC", "SYNCHRONIZED", "JUST", "JUSTIFIED", "BLANK", "GLOBAL",
     "EXTERNAL", "RENAMES", "SEPARATE"}
    | set(_USAGES)
    | _UNSUPPORTED_USAGES
)
_EXPECTED_CLAUSES = "PIC, USAGE, OCCURS, REDEFINES, VALUE, SIGN, SYNC, JUSTIFIED, BLANK WHEN ZERO or '.'"
_NAME_RE = re.compile(r"^[A-Z0-9](?:[A-Z0-9_-]*[A-Z0-9])?$", re.IGNORECASE)
_SKIP_DIRECTIVES = frozenset({"EJECT", "SKIP1", "SKIP2", "SKIP3"})


@dataclass(eq=False)
class _Item:
    level: int
    name: str | None  # None for FILLER
    tok: _Tok  # level-number token
    name_tok: _Tok
    pic: _Pic | None = None
    pic_tok: _Tok | None = None
    usage: str | None = None
    usage_tok: _Tok | None = None
    sign_leading: bool | None = None
    sign_separate: bool = False
    sign_tok: _Tok | None = None
    occurs_min: int | None = None
    occurs_max: int | None = None
    occurs_tok: _Tok | None = None
    depending: _Tok | None = None
    depending_quals: tuple[str, ...] = ()
    redefines: _Tok | None = None
    blank_when_zero: bool = False
    children: list["_Item"] = dc_field(default_factory=list)
    parent: "_Item | None" = None
    # computed by layout
    rel_offset: int = 0
    elem_size: int = 0
    size: int = 0
    redefines_target: "_Item | None" = None
    role: int = 0

    @property
    def line(self) -> int:
        return self.tok.line

    @property
    def display_name(self) -> str:
        return self.name or "FILLER"


class _Parser:
    def __init__(self, toks: list[_Tok], source: str) -> None:
        self.toks = toks
        self.source = source
        self.i = 0

    def err(self, tok: _Tok, msg: str) -> CopybookError:
        return CopybookError(self.source, tok.line, tok.col, msg)

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def items(self) -> list[_Item]:
        out: list[_Item] = []
        last_data: _Item | None = None
        while self.i < len(self.toks):
            tok = self.toks[self.i]
            if tok.kind == "period":  # stray period
                self.i += 1
                continue
            if tok.kind == "word" and tok.up in _SKIP_DIRECTIVES:
                self.i += 1
                continue
            if tok.kind == "word" and tok.up in ("COPY", "REPLACE"):
                raise self.err(tok, f"{tok.up} statements are not supported: expand the copybook first")
            if tok.text == "88" and last_data is None:
                raise self.err(tok, "level 88 condition must follow a data item")
            item = self.statement()
            if item is None:
                continue
            out.append(item)
            last_data = item
        return out

    def _expect_word(self, after: _Tok, what: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise self.err(after, f"unterminated statement: expected {what} after '{after.text}'")
        if tok.kind != "word":
            raise self.err(tok, f"expected {what}, found '{tok.text}'")
        self.i += 1
        return tok

    def _expect_int(self, after: _Tok, what: str) -> tuple[int, _Tok]:
        tok = self._expect_word(after, what)
        if not tok.text.isdigit():
            raise self.err(tok, f"expected {what}, found '{tok.text}'")
        return int(tok.text), tok

    def _optional(self, *words: str) -> _Tok | None:
        tok = self.peek()
        if tok is not None and tok.kind == "word" and tok.up in words:
            self.i += 1
            return tok
        return None

    def statement(self) -> _Item | None:
        lvl_tok = self.toks[self.i]
        if lvl_tok.kind != "word" or not lvl_tok.text.isdigit() or len(lvl_tok.text) > 2:
            raise self.err(lvl_tok, f"expected a level number (01-49, 66, 77 or 88), found '{lvl_tok.text}'")
        level = int(lvl_tok.text)
        if not (1 <= level <= 49 or level in (66, 77, 88)):
            raise self.err(lvl_tok, f"level number {lvl_tok.text} is not valid (expected 01-49, 66, 77 or 88)")
        self.i += 1
        if level in (66, 88):
            return self._skip_to_period(lvl_tok, level)
        name_tok = self.peek()
        if name_tok is None or name_tok.kind == "period":
            where = name_tok or lvl_tok
            if name_tok is None:
                raise self.err(lvl_tok, f"unterminated statement: expected a data name and '.' after level {lvl_tok.text}")
            raise self.err(where, f"expected a data name or FILLER after level {lvl_tok.text}, found '.'")
        if name_tok.kind == "word" and name_tok.up in _CLAUSE_WORDS:
            name: str | None = None  # implicit FILLER
            name_tok = lvl_tok
        else:
            if name_tok.kind != "word" or not _NAME_RE.match(name_tok.text) or name_tok.text.isdigit():
                raise self.err(name_tok, f"expected a data name after level {lvl_tok.text}, found '{name_tok.text}'")
            if len(name_tok.text) > 30:
                raise self.err(name_tok, f"data name '{name_tok.text}' is longer than 30 characters")
            self.i += 1
            name = None if name_tok.up == "FILLER" else name_tok.up.replace("_", "-")
        item = _Item(level=level, name=name, tok=lvl_tok, name_tok=name_tok)
        self._clauses(item)
        return item

    def _skip_to_period(self, lvl_tok: _Tok, level: int) -> None:
        """Skip a level 66/88 entry (RENAMES, condition names): up to its period."""
        start = self.i
        while self.i < len(self.toks):
            tok = self.toks[self.i]
            if tok.kind == "period":
                self.i += 1
                return None
            if self.i > start and self._starts_entry(self.i):
                prev = self.toks[self.i - 1]
                raise CopybookError(self.source, prev.line, prev.end_col,
                                    f"unterminated statement: expected '.' after '{prev.text}' to end the level "
                                    f"{level:02d} entry started at line {lvl_tok.line} before level {tok.text} "
                                    f"on line {tok.line}")
            self.i += 1
        last = self.toks[-1]
        raise CopybookError(self.source, last.line, last.end_col,
                            f"unterminated statement: expected '.' to end the level {level:02d} entry started at "
                            f"line {lvl_tok.line}")

    def _clauses(self, item: _Item) -> None:
        prev = item.name_tok
        while True:
            tok = self.peek()
            if tok is None:
                raise CopybookError(self.source, prev.line, prev.end_col,
                                    f"unterminated statement: expected '.' after '{prev.text}' to end the entry for "
                                    f"{item.display_name} (line {item.line})")
            if tok.kind == "period":
                self.i += 1
                return
            if tok.kind == "lit":
                raise self.err(tok, f"unexpected literal {tok.text}; expected {_EXPECTED_CLAUSES}")
            w = tok.up
            self.i += 1
            if w in ("PIC", "PICTURE"):
                self._optional("IS")
                if item.pic is not None:
                    raise self.err(tok, f"{item.display_name} has two PICTURE clauses")
                ptok = self._expect_word(tok, "a picture string")
                item.pic = _parse_pic(ptok, self.source)
                item.pic_tok = ptok
                prev = ptok
            elif w == "USAGE":
                self._optional("IS")
                utok = self._expect_word(tok, "a usage (DISPLAY, COMP, COMP-3, ...)")
                self._set_usage(item, utok)
                prev = utok
            elif w in _USAGES or w in _UNSUPPORTED_USAGES:
                self._set_usage(item, tok)
                prev = tok
            elif w in ("SIGN", "LEADING", "TRAILING"):
                if w == "SIGN":
                    self._optional("IS")
                    stok = self._expect_word(tok, "LEADING or TRAILING")
                else:
                    stok = tok
                if stok.up not in ("LEADING", "TRAILING"):
                    raise self.err(stok, f"expected LEADING or TRAILING after SIGN, found '{stok.text}'")
                item.sign_leading = stok.up == "LEADING"
                item.sign_tok = tok
                prev = stok
                if self._optional("SEPARATE"):
                    item.sign_separate = True
                    prev = self._optional("CHARACTER") or self.toks[self.i - 1]
            elif w == "OCCURS":
                prev = self._occurs(item, tok)
            elif w == "REDEFINES":
                rtok = self._expect_word(tok, "the name of the item to redefine")
                if item.redefines is not None:
                    raise self.err(tok, f"{item.display_name} has two REDEFINES clauses")
                item.redefines = rtok
                prev = rtok
            elif w in ("VALUE", "VALUES"):
                self._optional("IS", "ARE")
                prev = self._skip_operands(tok, "a literal")
            elif w in ("ASCENDING", "DESCENDING"):
                self._optional("KEY")
                self._optional("IS")
                prev = self._skip_operands(tok, "a key name")
            elif w == "INDEXED":
                self._optional("BY")
                prev = self._skip_operands(tok, "an index name")
            elif w in ("SYNC", "SYNCHRONIZED"):
                prev = self._optional("LEFT", "RIGHT") or tok
            elif w in ("JUST", "JUSTIFIED"):
                prev = self._optional("RIGHT") or tok
            elif w == "BLANK":
                self._optional("WHEN")
                ztok = self._expect_word(tok, "ZERO")
                if ztok.up not in ("ZERO", "ZEROS", "ZEROES"):
                    raise self.err(ztok, f"expected ZERO after BLANK WHEN, found '{ztok.text}'")
                item.blank_when_zero = True
                prev = ztok
            elif w in ("GLOBAL", "EXTERNAL"):
                prev = tok
            elif w == "RENAMES":
                raise self.err(tok, "RENAMES is only valid at level 66")
            elif self._starts_entry(self.i - 1) or (tok.text.isdigit() and len(tok.text) <= 2 and tok.line != prev.line):
                raise CopybookError(self.source, prev.line, prev.end_col,
                                    f"unterminated statement: expected '.' after '{prev.text}' to end the entry for "
                                    f"{item.display_name} before level {tok.text} on line {tok.line}")
            else:
                raise self.err(tok, f"unknown clause '{tok.text}' in the entry for {item.display_name}; "
                                    f"expected {_EXPECTED_CLAUSES}")

    def _set_usage(self, item: _Item, tok: _Tok) -> None:
        w = tok.up
        if w in _UNSUPPORTED_USAGES:
            raise self.err(tok, f"USAGE {tok.text} is not supported (supported: DISPLAY, COMP/BINARY/COMP-4, "
                                "COMP-5, COMP-3/PACKED-DECIMAL, COMP-1, COMP-2, INDEX)")
        if w not in _USAGES:
            raise self.err(tok, f"unknown USAGE '{tok.text}'; expected DISPLAY, COMP, COMP-3, COMP-5, COMP-1, COMP-2 ...")
        if item.usage is not None:
            raise self.err(tok, f"{item.display_name} has two USAGE clauses")
        item.usage = _USAGES[w]
        item.usage_tok = tok

    def _occurs(self, item: _Item, tok: _Tok) -> _Tok:
        if item.occurs_max is not None:
            raise self.err(tok, f"{item.display_name} has two OCCURS clauses")
        n1, t1 = self._expect_int(tok, "the number of occurrences")
        prev = t1
        has_to = self._optional("TO") is not None
        if has_to:
            n2, t2 = self._expect_int(t1, "the maximum number of occurrences after TO")
            if n2 < n1:
                raise self.err(t2, f"OCCURS {n1} TO {n2}: the maximum is less than the minimum")
            item.occurs_min, item.occurs_max = n1, n2
            prev = t2
        else:
            item.occurs_min, item.occurs_max = n1, n1
        if item.occurs_max == 0:
            raise self.err(prev, "OCCURS needs at least one occurrence")
        item.occurs_tok = tok
        prev = self._optional("TIMES") or prev
        dep = self._optional("DEPENDING")
        if dep is not None:
            self._optional("ON")
            ctok = self._expect_word(dep, "the name of the counter after DEPENDING ON")
            quals: list[str] = []
            while self._optional("OF", "IN"):
                quals.append(self._expect_word(self.toks[self.i - 1], "a qualifier name").up)
            item.depending = ctok
            item.depending_quals = tuple(quals)
            if not has_to:
                item.occurs_min = 0  # "OCCURS n DEPENDING ON": the count may be 0 to n
            prev = self.toks[self.i - 1]
        elif has_to:
            raise self.err(tok, f"OCCURS {item.occurs_min} TO {item.occurs_max} needs DEPENDING ON")
        return prev

    def _starts_entry(self, k: int) -> bool:
        """Does token k look like the level number of a new entry (a missing period before it)?"""
        t = self.toks[k]
        if t.kind != "word" or not t.text.isdigit() or len(t.text) > 2 or k == 0:
            return False
        if self.toks[k - 1].line == t.line:
            return False
        lvl = int(t.text)
        if not (1 <= lvl <= 49 or lvl in (66, 77, 88)):
            return False
        nxt = self.toks[k + 1] if k + 1 < len(self.toks) else None
        return nxt is not None and nxt.kind == "word" and not nxt.text.lstrip("+-").replace(".", "").isdigit() \
            and nxt.up not in ("THRU", "THROUGH", "ALSO")

    def _skip_operands(self, tok: _Tok, what: str) -> _Tok:
        """Skip operands (literals, names) up to the next clause word or period."""
        prev = tok
        count = 0
        while True:
            t = self.peek()
            if t is None or t.kind == "period" or (t.kind == "word" and t.up in _CLAUSE_WORDS):
                break
            if count and self._starts_entry(self.i):
                break  # the caller reports the missing period
            prev = t
            self.i += 1
            count += 1
        if count == 0:
            t = self.peek()
            if t is None:
                raise self.err(tok, f"unterminated statement: expected {what} after '{tok.text}'")
            raise self.err(t, f"expected {what} after {tok.text}, found '{t.text}'")
        return prev


# --------------------------------------------------------------------------- structure and layout


def _out_name(cobol: str) -> str:
    return cobol.upper().replace("-", "_")


def _build_tree(items: list[_Item], source: str) -> _Item:
    def err(tok: _Tok, msg: str) -> CopybookError:
        return CopybookError(source, tok.line, tok.col, msg)

    if not items:
        raise CopybookError(source, 1, 1, "copybook has no data description entries (expected '01 record-name.')")
    first = items[0]
    if first.level in (1, 77):
        root = first
        rest = items[1:]
    else:
        stem = PurePath(source).stem if source and not source.startswith("<") else "RECORD"
        stem = re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-").upper() or "RECORD"
        root = _Item(level=0, name=stem, tok=first.tok, name_tok=first.tok)
        rest = items
    stack: list[_Item] = [root]
    for item in rest:
        if item.level in (1, 77):
            raise err(item.tok, f"second record {item.display_name} at level {item.level:02d}; a copybook must describe "
                                f"one record (the first is {root.display_name} at line {root.line})")
        if root.level == 77:
            raise err(item.tok, f"level 77 item {root.display_name} (line {root.line}) cannot have subordinate items")
        while stack[-1].level >= item.level:
            stack.pop()
        parent = stack[-1]
        if parent.children and parent.children[-1].level != item.level:
            sib = parent.children[-1]
            open_levels = ", ".join(f"{s.level:02d}" for s in stack if s.level)
            raise err(item.tok, f"level {item.tok.text} of {item.display_name} does not match level {sib.level:02d} of "
                                f"its sibling {sib.display_name} (line {sib.line}); open levels are {open_levels}")
        if parent.pic is not None:
            raise err(item.tok, f"{item.display_name} cannot be subordinate to {parent.display_name} (line {parent.line}), "
                                "which has a PICTURE (an elementary item)")
        item.parent = parent
        parent.children.append(item)
        stack.append(item)
    return root


def _finalize_items(root: _Item, source: str) -> None:
    """Inherit group clauses, check PIC/USAGE combinations."""

    def err(tok: _Tok, msg: str) -> CopybookError:
        return CopybookError(source, tok.line, tok.col, msg)

    def walk(item: _Item, usage: str | None, usage_tok: _Tok | None, sign: tuple | None) -> None:
        if item.occurs_tok is not None and item.level in (1, 77):
            raise err(item.occurs_tok, f"OCCURS is not allowed at level {item.level:02d}")
        own_usage = item.usage
        if own_usage is None and usage is not None:
            item.usage, item.usage_tok = usage, usage_tok
        if item.children:
            if item.pic is not None:  # pragma: no cover - caught while building the tree
                raise err(item.pic_tok, f"group {item.display_name} cannot have a PICTURE")
            if item.blank_when_zero:
                raise err(item.tok, f"BLANK WHEN ZERO is not valid on group {item.display_name}")
            g_sign = (item.sign_leading, item.sign_separate, item.sign_tok) if item.sign_tok else sign
            for c in item.children:
                walk(c, item.usage, item.usage_tok, g_sign)
            return
        u = item.usage or "DISPLAY"
        item.usage = u
        if u in ("COMP-1", "COMP-2", "INDEX"):
            if item.pic is not None:
                raise err(item.pic_tok, f"{item.display_name} is USAGE {u} and must not have a PICTURE")
        elif item.pic is None:
            raise err(item.name_tok, f"elementary item {item.display_name} has no PICTURE clause "
                                     "(only COMP-1, COMP-2 and INDEX items may omit it)")
        pic = item.pic
        if pic is not None and pic.category in ("text", "edited") and u != "DISPLAY":
            kind = "alphanumeric" if pic.category == "text" else "edited"
            raise err(item.usage_tok or item.pic_tok, f"{kind} PIC '{pic.text}' of {item.display_name} cannot be USAGE {u}")
        if pic is not None and pic.category == "numeric" and u in ("COMP", "COMP-5") and pic.digits > MAX_BINARY_DIGITS:
            raise err(item.pic_tok, f"PIC '{pic.text}' has {pic.digits} digits; binary items hold at most {MAX_BINARY_DIGITS}")
        if item.sign_tok is not None:
            if pic is None or pic.category != "numeric" or not pic.signed or u != "DISPLAY":
                raise err(item.sign_tok, f"SIGN clause of {item.display_name} needs a signed DISPLAY numeric PIC (S9...)")
        elif sign is not None and pic is not None and pic.category == "numeric" and pic.signed and u == "DISPLAY":
            item.sign_leading, item.sign_separate = sign[0], sign[1]
        if item.blank_when_zero and not (pic is not None and u == "DISPLAY" and pic.category in ("numeric", "edited")):
            raise err(item.tok, f"BLANK WHEN ZERO on {item.display_name} needs a DISPLAY numeric or edited PIC")

    walk(root, None, None, None)


def _elem_length(item: _Item) -> int:
    u = item.usage
    if u == "COMP-1":
        return 4
    if u in ("COMP-2",):
        return 8
    if u == "INDEX":
        return 4
    pic = item.pic
    assert pic is not None
    if pic.category != "numeric":
        return pic.length
    if u in ("COMP", "COMP-5"):
        return 2 if pic.digits <= 4 else 4 if pic.digits <= 9 else 8
    if u == "COMP-3":
        return pic.digits // 2 + 1
    return pic.digits + (1 if item.sign_separate else 0)


def _layout(item: _Item, source: str) -> int:
    """Assign relative offsets and sizes; returns the item's total size."""
    if item.children:
        cursor = 0
        for idx, child in enumerate(item.children):
            if child.redefines is not None:
                target = _resolve_redefines(item.children, idx, source)
                child.rel_offset = target.rel_offset
                size = _layout(child, source)
                cursor = max(cursor, target.rel_offset + size)
            else:
                child.rel_offset = cursor
                cursor += _layout(child, source)
        item.elem_size = cursor
    else:
        item.elem_size = _elem_length(item)
    item.size = item.elem_size * (item.occurs_max or 1)
    return item.size


def _resolve_redefines(siblings: list[_Item], idx: int, source: str) -> _Item:
    item = siblings[idx]
    rtok = item.redefines
    assert rtok is not None
    want = rtok.up.replace("_", "-")
    for j in range(idx - 1, -1, -1):
        sib = siblings[j]
        if sib.name == want:
            if sib.redefines is not None:
                raise CopybookError(source, rtok.line, rtok.col,
                                    f"REDEFINES {rtok.text}: {rtok.text} itself redefines another item; "
                                    f"redefine the original item {sib.redefines.text}")
            item.redefines_target = sib
            return sib
        if sib.redefines is None or sib.redefines_target is None or sib.redefines_target.name != want:
            break
    exists_later = any(s.name == want for s in siblings[idx + 1:])
    hint = " (it is declared after this entry)" if exists_later else ""
    raise CopybookError(source, rtok.line, rtok.col,
                        f"REDEFINES {rtok.text}: no item {rtok.text} at level {item.level:02d} immediately before "
                        f"{item.display_name}{hint}; REDEFINES must name the preceding item of the same level")


def _iter_items(item: _Item) -> Iterator[_Item]:
    yield item
    for c in item.children:
        yield from _iter_items(c)


def _assign_roles(item: _Item, role: int) -> None:
    if item.redefines is not None:
        role = 2
    elif role == 0 and any(s.redefines_target is item for s in (item.parent.children if item.parent else [])):
        role = 1
    item.role = role
    for c in item.children:
        _assign_roles(c, role)


def _is_filler_tree(item: _Item) -> bool:
    p: _Item | None = item
    while p is not None:
        if p.name is None:
            return True
        p = p.parent
    return False


def _qualified_names(root: _Item, source: str) -> dict[int, str]:
    """Output base names for non-FILLER leaves, qualified with parents when repeated."""
    leaves = [it for it in _iter_items(root) if not it.children and not _is_filler_tree(it)]
    paths: dict[int, list[str]] = {}
    for leaf in leaves:
        path = []
        p = leaf.parent
        while p is not None:
            path.append(_out_name(p.name or "FILLER"))
            p = p.parent
        paths[id(leaf)] = path[::-1]  # root first
    depth = {id(leaf): 0 for leaf in leaves}

    def name_of(leaf: _Item) -> str:
        d = depth[id(leaf)]
        parts = paths[id(leaf)][len(paths[id(leaf)]) - d:] if d else []
        return "_".join(parts + [_out_name(leaf.name or "FILLER")])

    while True:
        groups: dict[str, list[_Item]] = {}
        for leaf in leaves:
            groups.setdefault(name_of(leaf), []).append(leaf)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            break
        progressed = False
        for g in clashes:
            for leaf in g:
                if depth[id(leaf)] < len(paths[id(leaf)]):
                    depth[id(leaf)] += 1
                    progressed = True
        if not progressed:
            g = clashes[0]
            raise CopybookError(source, g[1].name_tok.line, g[1].name_tok.col,
                                f"data name {g[1].display_name} is declared twice with the same qualification "
                                f"(first at line {g[0].line}); names must be unique within their group")
    return {id(leaf): name_of(leaf) for leaf in leaves}


def _check_odo(root: _Item, source: str) -> _Item | None:
    """Validate the OCCURS DEPENDING ON table (at most one, last in the record)."""
    odo_items = [it for it in _iter_items(root) if it.depending is not None]
    if not odo_items:
        return None
    table = odo_items[0]
    for it in odo_items:
        if it.role:
            raise CopybookError(source, it.occurs_tok.line, it.occurs_tok.col,
                                f"OCCURS DEPENDING ON table {it.display_name} inside a REDEFINES area is not supported")
        anc = it.parent
        while anc is not None:
            if anc.occurs_max is not None:
                raise CopybookError(source, it.occurs_tok.line, it.occurs_tok.col,
                                    f"OCCURS DEPENDING ON table {it.display_name} is inside OCCURS table "
                                    f"{anc.display_name} (line {anc.line}); nested variable tables are not supported")
            if anc.redefines is not None or anc.role:
                raise CopybookError(source, it.occurs_tok.line, it.occurs_tok.col,
                                    f"OCCURS DEPENDING ON table {it.display_name} inside a REDEFINES area is not supported")
            anc = anc.parent
    # nothing may follow the table in storage
    node = table
    while node.parent is not None:
        sibs = node.parent.children
        k = sibs.index(node)
        if k + 1 < len(sibs):
            nxt = sibs[k + 1]
            raise CopybookError(source, nxt.tok.line, nxt.tok.col,
                                f"{nxt.display_name} follows OCCURS DEPENDING ON table {table.display_name} (line "
                                f"{table.line}); the variable table must be the last item of the record")
        node = node.parent
    return table


def _resolve_counter(root: _Item, table: _Item, source: str) -> _Item:
    ctok = table.depending
    assert ctok is not None
    want = ctok.up.replace("_", "-")
    cands = [it for it in _iter_items(root) if it.name == want]
    for q in table.depending_quals:
        qn = q.replace("_", "-")

        def under(it: _Item, qn: str = qn) -> bool:
            p = it.parent
            while p is not None:
                if p.name == qn:
                    return True
                p = p.parent
            return False

        cands = [c for c in cands if under(c)]
    if not cands:
        raise CopybookError(source, ctok.line, ctok.col,
                            f"DEPENDING ON {ctok.text}: no data item {ctok.text} in this copybook")
    if len(cands) > 1:
        raise CopybookError(source, ctok.line, ctok.col,
                            f"DEPENDING ON {ctok.text} is ambiguous (lines {', '.join(str(c.line) for c in cands)}); "
                            f"qualify it with OF group-name")
    c = cands[0]
    if c.children or c.pic is None or c.pic.category != "numeric" or c.pic.scale != 0:
        raise CopybookError(source, ctok.line, ctok.col,
                            f"DEPENDING ON {ctok.text}: the counter (line {c.line}) must be an elementary integer item")
    p: _Item | None = c
    while p is not None:
        if p.occurs_max is not None:
            raise CopybookError(source, ctok.line, ctok.col,
                                f"DEPENDING ON {ctok.text}: the counter (line {c.line}) must not be inside an OCCURS table")
        if p is table:
            raise CopybookError(source, ctok.line, ctok.col,
                                f"DEPENDING ON {ctok.text}: the counter must not be inside its own table")
        p = p.parent
    return c


def _abs_offset(item: _Item) -> int:
    off = 0
    p: _Item | None = item
    while p is not None:
        off += p.rel_offset
        p = p.parent
    return off


# --------------------------------------------------------------------------- parse_copybook


def parse_copybook(text: str, source: str = "<copybook>") -> Copybook:
    """Parse the text of a COBOL copybook into a :class:`Copybook`.

    Raises :class:`CopybookError` (a ``ValueError``) naming ``source``, the
    1-based line and column, what was found and what was expected.
    """
    if not isinstance(text, str):
        raise TypeError("parse_copybook expects the copybook text as str")
    toks = _tokenize(text, source)
    items = _Parser(toks, source).items()
    root = _build_tree(items, source)
    _finalize_items(root, source)
    if not root.children and root.level == 0:  # pragma: no cover - defensive
        raise CopybookError(source, 1, 1, "copybook has no data items")
    _layout(root, source)
    root.rel_offset = 0
    _assign_roles(root, 0)
    table = _check_odo(root, source)
    counter = _resolve_counter(root, table, source) if table is not None else None
    if table is not None and counter is not None:
        if _abs_offset(counter) + counter.elem_size > _abs_offset(table):
            ctok = table.depending
            raise CopybookError(source, ctok.line, ctok.col,
                                f"DEPENDING ON {ctok.text}: the counter (line {counter.line}) must precede the table")
        if counter.role:
            ctok = table.depending
            raise CopybookError(source, ctok.line, ctok.col,
                                f"DEPENDING ON {ctok.text}: the counter (line {counter.line}) must not be in a REDEFINES area")
    names = _qualified_names(root, source)
    if counter is not None and id(counter) not in names:
        ctok = table.depending
        raise CopybookError(source, ctok.line, ctok.col, f"DEPENDING ON {ctok.text}: the counter must not be FILLER")

    fields: list[Field] = []
    counter_out = names.get(id(counter)) if counter is not None else None
    counter_index = -1

    def expand(item: _Item, base: int, indices: tuple[int, ...], odo_index: int | None) -> None:
        nonlocal counter_index
        reps = item.occurs_max or 1
        for k in range(reps):
            off = base + item.rel_offset + k * item.elem_size
            idx = indices + ((k + 1,) if item.occurs_max is not None else ())
            oi = (k + 1) if item is table else odo_index
            if item.children:
                for c in item.children:
                    expand(c, off, idx, oi)
                continue
            filler = _is_filler_tree(item)
            base_name = "FILLER" if filler else names[id(item)]
            name = base_name if filler else base_name + "".join(f"_{i}" for i in idx)
            pic = item.pic
            u = item.usage or "DISPLAY"
            if u in ("COMP-1", "COMP-2"):
                kind = "float"
            elif u == "INDEX":
                kind = "binary"
            elif pic is not None and pic.category == "text":
                kind = "text"
            elif pic is not None and pic.category == "edited":
                kind = "edited"
            else:
                kind = {"DISPLAY": "zoned", "COMP": "binary", "COMP-5": "binary", "COMP-3": "packed"}[u]
            digits = 9 if u == "INDEX" else (pic.digits if pic is not None and kind != "text" else 0)
            f = Field(
                name=name,
                offset=off,
                length=item.elem_size,
                kind=kind,
                digits=digits,
                scale=pic.scale if pic is not None and kind != "text" else 0,
                signed=(u == "INDEX") or bool(pic is not None and pic.signed and kind != "text"),
                sign_leading=bool(item.sign_leading) and kind == "zoned",
                sign_separate=item.sign_separate and kind == "zoned",
                float_bytes=item.elem_size if kind == "float" else 0,
                odo=(OdoInfo(counter_out, oi, table.occurs_min or 0, table.occurs_max or 0)
                     if oi is not None and table is not None else None),
                in_redefines=item.role != 0,
                line=item.line,
                cobol_name=item.display_name,
                base_name=base_name,
                occurs_index=idx,
                usage=u,
                picture=pic.text if pic is not None else "",
                edit_symbols=pic.symbols if pic is not None and kind == "edited" else (),
                blank_when_zero=item.blank_when_zero,
                filler=filler,
                redefines_role=item.role,
            )
            if item is counter:
                counter_index = len(fields)
            fields.append(f)

    if root.children:
        for c in root.children:
            expand(c, 0, (), None)
    else:
        expand(root, 0, (), None)

    seen: dict[str, Field] = {}
    for f in fields:
        if f.filler:
            continue
        if f.name in seen:
            raise CopybookError(source, f.line, 1, f"output column {f.name} of {f.cobol_name} clashes with "
                                                   f"{seen[f.name].cobol_name} (line {seen[f.name].line}); rename one")
        seen[f.name] = f
    if "RECORD_NO" in seen:
        f = seen["RECORD_NO"]
        raise CopybookError(source, f.line, 1, "a field named RECORD-NO clashes with the record_no output column")

    odo = None
    if table is not None:
        odo = OdoTable(
            name=_out_name(table.display_name),
            counter=counter_out or "",
            counter_index=counter_index,
            offset=_abs_offset(table),
            element_length=table.elem_size,
            min_count=table.occurs_min or 0,
            max_count=table.occurs_max or 0,
        )

    def node(item: _Item) -> Node | None:
        if item.name is None:
            return None
        if item.children:
            kids = tuple(k for k in (node(c) for c in item.children) if k is not None)
            nm = _out_name(item.name)
        else:
            kids = ()
            nm = names[id(item)]
        return Node(
            name=nm,
            is_group=bool(item.children),
            occurs=item.occurs_max,
            min_occurs=item.occurs_min if item.depending is not None else None,
            depending_on=counter_out if item is table else None,
            children=kids,
            line=item.line,
        )

    if root.children:
        tree = Node(name=_out_name(root.display_name), is_group=True,
                    children=tuple(k for k in (node(c) for c in root.children) if k is not None), line=root.line)
    else:
        leaf = node(root)
        tree = Node(name=_out_name(root.display_name), is_group=True, children=(leaf,) if leaf else (), line=root.line)

    record_length = root.size
    min_length = odo.record_length(odo.min_count) if odo else record_length
    if record_length == 0:  # pragma: no cover - every item has a length
        raise CopybookError(source, root.line, 1, "record has no storage")
    return Copybook(
        name=_out_name(root.display_name),
        fields=fields,
        record_length=record_length,
        min_length=min_length,
        is_variable=odo is not None,
        tree=tree,
        columns=[f.name for f in fields if not f.filler],
        source=source,
        odo=odo,
    )
