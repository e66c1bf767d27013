"""Framing, vectorized decoding and encoding of mainframe records.

Works on a :class:`legacy.copybook.Copybook` (use ``legacy.copybook``, which
re-exports everything here):

* :func:`iter_record_blocks` frames a file into :class:`RecordBlock` s - a
  ``(n, width)`` uint8 matrix of records - or :class:`FramingError` s.  RECFM
  ``F`` (fixed length, no delimiters) is reshaped with numpy; RECFM ``V``
  (4-byte IBM RDW before each record) walks the headers with one cheap Python
  step per record.  The file is read in chunks, so memory stays flat.
* :func:`decode_block` decodes a block column by column: one numpy pass per
  field over all records, never a Python loop per record and field.  Good
  records become an Arrow table, bad ones a quarantine table (one row per
  record, naming the first bad field).
* :func:`encode_matrix` / :func:`encode_records` are the exact inverse, used to
  generate sample files and for round-trip tests.

Quarantine reason codes (:data:`REASON_CODES`): ``record_length``,
``trailing_bytes``, ``bad_rdw``, ``invalid_packed``, ``invalid_zoned``,
``invalid_text``, ``invalid_edited``, ``odo_out_of_range``.  Structural problems
take precedence over field problems: a record too short to hold the ODO
counter, then the counter's own decoding, its range, the record length it
implies, and only then the first bad field in storage order.  Details mention
byte values of the bad field only, never decoded text of other fields.

Decoded types: text -> string (trailing spaces removed, all low-values or all
high-values -> null); numbers with scale 0 -> int64 (decimal128(p, 0) beyond 18
digits); scale > 0 -> exact decimal128 built from the unscaled integers; COMP-1/
COMP-2 -> float64 (IBM hexadecimal floating point for EBCDIC code pages, IEEE
754 big-endian otherwise, or as ``float_format`` says).  Binary items are
decoded in full (TRUNC(BIN) semantics); an unsigned 8-byte COMP value beyond
int64 (impossible for a PIC of at most 18 digits) decodes as null.

Validity rules: zoned digits are 0xF0-0xF9 (EBCDIC) or 0x30-0x39 (ASCII); the
sign byte of a signed field may carry zone C/A/E/F (+) or D/B (-) in EBCDIC, or
``{A-I`` (+0..9), ``}J-R`` / 0x70-0x79 (-0..9) in ASCII; unsigned fields need a
plain digit (zone F) in every byte.  Packed digit nibbles are 0-9, the sign
nibble C/A/E/F (+) or D/B (-) for signed fields and F for unsigned ones; the
pad nibble of an even-digit field must be 0.  Edited pictures are checked
position by position (digits, suppression fill, insertion characters,
floating symbols, sign/CR/DB).
"""

from __future__ import annotations

import codecs
import decimal
import os
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, BinaryIO, Callable, Iterator, Literal, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from legacy.copybook import Copybook, Field, Node, edit_roles
from legacy.errors import UsageError

__all__ = [
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
]

REASON_CODES = (
    "record_length",
    "trailing_bytes",
    "bad_rdw",
    "invalid_packed",
    "invalid_zoned",
    "invalid_text",
    "invalid_edited",
    "odo_out_of_range",
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("record_no", pa.int64()),
        ("offset", pa.int64()),
        ("field", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.binary()),
    ]
)

_REASON_BY_KIND = {
    "zoned": "invalid_zoned",
    "packed": "invalid_packed",
    "text": "invalid_text",
    "edited": "invalid_edited",
}

# A bad RDW in the middle of a V file makes the rest unreadable; it becomes one
# quarantine row whose raw bytes are capped to keep memory bounded.
MAX_RAW_REST = 16 << 20
_V_CHUNK = 4 << 20


# --------------------------------------------------------------------------- public data types


@dataclass
class RecordBlock:
    """Consecutive records of a file as a zero-padded byte matrix."""

    first_record_no: int  # 1-based record number in the file of row 0
    data: np.ndarray  # uint8, shape (n, width); width >= longest record in the block
    lengths: np.ndarray  # int64, actual byte length of each record
    offsets: np.ndarray  # int64, byte offset of each record in the file (V: of its RDW)
    fixed_length: bool = False  # framed as RECFM F: ODO records are padded, length not checked

    def __len__(self) -> int:
        return int(self.data.shape[0])


@dataclass
class FramingError:
    """Bytes that do not form a record (reason ``trailing_bytes`` or ``bad_rdw``)."""

    record_no: int
    offset: int
    reason: str
    detail: str
    raw: bytes


@dataclass
class DecodeResult:
    """Decoded good records (``table``) and one quarantine row per bad record."""

    table: pa.Table
    quarantine: pa.Table


# --------------------------------------------------------------------------- code pages


@dataclass(frozen=True, eq=False)
class _Codec:
    name: str
    ebcdic: bool
    cp: np.ndarray  # uint32[256] code point of each byte
    text_bad: np.ndarray  # bool[256]: undecodable byte or NUL
    utf8_len: np.ndarray  # uint8[256]: UTF-8 length of each byte's character
    digit: np.ndarray  # uint8[256]: digit value of a plain digit byte, else 255
    over_digit: np.ndarray  # uint8[256]: digit of a sign-overpunched byte, else 255
    over_neg: np.ndarray  # bool[256]: overpunch means negative
    enc: np.ndarray  # int16[max code point + 1] -> byte, -1 if not encodable
    space: int
    plus: int
    minus: int
    digit_bytes: np.ndarray  # uint8[10]: byte of '0'..'9'
    bad_only_nul: bool  # the only invalid text byte is NUL
    bad_from: int | None  # invalid text bytes are NUL and every byte >= this

    def byte(self, ch: str) -> int:
        cp = ord(ch)
        b = int(self.enc[cp]) if cp < len(self.enc) else -1
        if b < 0:
            raise ValueError(f"character {ch!r} cannot be encoded in {self.name}")
        return b


class EncodingError(UsageError, ValueError):
    """An encoding that is not a single-byte EBCDIC or ASCII code page (a bad setting, not a bad record)."""


@lru_cache(maxsize=32)
def _codec(encoding: str) -> _Codec:
    """Lookup tables for a single-byte code page (EBCDIC or ASCII family)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise EncodingError(f"unknown encoding {encoding!r} (e.g. cp037, cp500, cp1140, ascii, latin-1)") from None
    try:
        if len("\u00e9".encode(info.name)) != 1:
            raise EncodingError(f"encoding {encoding!r} is not a single-byte code page (e.g. cp037, ascii, latin-1)")
    except UnicodeEncodeError:
        pass
    cp = np.zeros(256, np.uint32)
    valid = np.zeros(256, bool)
    for b in range(256):
        try:
            s = bytes([b]).decode(info.name)
        except UnicodeDecodeError:
            continue
        if len(s) == 1:
            cp[b] = ord(s)
            valid[b] = True
    ebcdic = bool(valid[0xF0] and cp[0xF0] == ord("0") and cp[0xC1] == ord("A"))
    if not ebcdic and not (valid[0x30] and cp[0x30] == ord("0")):
        raise EncodingError(f"encoding {encoding!r}: digits are neither EBCDIC (0xF0) nor ASCII (0x30)")
    utf8_len = np.zeros(256, np.uint8)
    for b in np.flatnonzero(valid):
        utf8_len[b] = len(chr(int(cp[b])).encode("utf-8"))
    enc = np.full(int(cp[valid].max()) + 1, -1, np.int16)
    for b in np.flatnonzero(valid)[::-1]:
        enc[cp[b]] = b
    digit = np.full(256, 255, np.uint8)
    over_digit = np.full(256, 255, np.uint8)
    over_neg = np.zeros(256, bool)
    if ebcdic:
        for d in range(10):
            digit[0xF0 | d] = d
            for zone in (0xA, 0xC, 0xE, 0xF):
                over_digit[(zone << 4) | d] = d
            for zone in (0xB, 0xD):
                over_digit[(zone << 4) | d] = d
                over_neg[(zone << 4) | d] = True
    else:
        for d in range(10):
            digit[0x30 + d] = d
            over_digit[0x30 + d] = d
            over_digit[b"{ABCDEFGHI"[d]] = d
            over_digit[b"}JKLMNOPQR"[d]] = d
            over_neg[b"}JKLMNOPQR"[d]] = True
            over_digit[0x70 + d] = d
            over_neg[0x70 + d] = True

    def byte(ch: str) -> int:
        return int(enc[ord(ch)])

    text_bad = ~valid | (cp == 0)
    bad_set = set(np.flatnonzero(text_bad).tolist())
    bad_only_nul = bad_set == {0}
    bad_from = None
    if not bad_only_nul:
        k = min(b for b in bad_set if b)
        if bad_set == {0} | set(range(k, 256)):
            bad_from = k

    return _Codec(
        name=encoding,
        ebcdic=ebcdic,
        cp=cp,
        text_bad=text_bad,
        utf8_len=utf8_len,
        digit=digit,
        over_digit=over_digit,
        over_neg=over_neg,
        enc=enc,
        space=byte(" "),
        plus=byte("+"),
        minus=byte("-"),
        digit_bytes=np.array([byte(str(d)) for d in range(10)], np.uint8),
        bad_only_nul=bad_only_nul,
        bad_from=bad_from,
    )


def _float_format(codec: _Codec, float_format: str | None) -> str:
    if float_format is None:
        return "ibm" if codec.ebcdic else "ieee"
    if float_format not in ("ibm", "ieee"):
        raise ValueError(f"float_format must be 'ibm', 'ieee' or None, not {float_format!r}")
    return float_format


# --------------------------------------------------------------------------- framing


def _open(path_or_file: Any):
    if hasattr(path_or_file, "read"):
        return nullcontext(path_or_file)
    return open(os.fspath(path_or_file), "rb")


def _read_full(f: BinaryIO, size: int) -> bytearray:
    """Read up to ``size`` bytes (fewer only at end of file) into a new bytearray."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    readinto = getattr(f, "readinto", None)
    while got < size:
        if readinto is not None:
            k = readinto(view[got:])
        else:
            chunk = f.read(size - got)
            k = len(chunk)
            view[got:got + k] = chunk
        if not k:
            break
        got += k
    view.release()
    if got < size:
        del buf[got:]
    return buf


def iter_record_blocks(
    path_or_file: Any,
    copybook: Copybook,
    *,
    record_format: Literal["F", "V"],
    block_records: int = 50_000,
) -> Iterator[RecordBlock | FramingError]:
    """Frame a file into blocks of at most ``block_records`` records.

    ``F``: fixed-length records of ``copybook.record_length`` bytes; a partial
    record at the end is a ``trailing_bytes`` FramingError.  ``V``: each record
    is preceded by an RDW (2-byte big-endian length including the 4 RDW bytes,
    then 2 zero bytes).  An RDW that is cut off by the end of the file is
    ``trailing_bytes``; an impossible RDW (length < 4, non-zero reserved bytes)
    is ``bad_rdw`` and - since nothing after it can be resynchronised - ends
    the file: the remaining bytes become that one error.
    """
    if record_format not in ("F", "V"):
        raise ValueError(f"record_format must be 'F' or 'V', not {record_format!r}")
    if block_records < 1:
        raise ValueError("block_records must be at least 1")
    with _open(path_or_file) as f:
        if record_format == "F":
            yield from _iter_fixed(f, copybook.record_length, block_records)
        else:
            yield from _iter_variable(f, block_records)


def _iter_fixed(f: BinaryIO, reclen: int, block_records: int) -> Iterator[RecordBlock | FramingError]:
    rec_no, off = 1, 0
    want = reclen * block_records
    while True:
        buf = _read_full(f, want)
        got = len(buf)
        n = got // reclen
        if n:
            data = np.frombuffer(buf, np.uint8, count=n * reclen).reshape(n, reclen)
            yield RecordBlock(
                first_record_no=rec_no,
                data=data,
                lengths=np.full(n, reclen, np.int64),
                offsets=off + np.arange(n, dtype=np.int64) * reclen,
                fixed_length=True,
            )
        if got < want:
            rest = got - n * reclen
            if rest:
                yield FramingError(
                    record_no=rec_no + n,
                    offset=off + n * reclen,
                    reason="trailing_bytes",
                    detail=f"{rest} bytes after the last whole record (records are {reclen} bytes)",
                    raw=bytes(buf[n * reclen:]),
                )
            return
        rec_no += n
        off += got


def _scan_rdws(buf: bytearray, pos: int, limit: int, found: list[int]) -> tuple[int, str]:
    """Walk RDWs from ``pos`` while whole records are buffered; append their positions.

    Returns the position reached and why it stopped: ``full`` (``limit``
    records found), ``more`` (the next header or record is not buffered yet)
    or ``bad`` (an impossible header at the returned position).
    """
    blen = len(buf)
    append = found.append
    n = 0
    while n < limit:
        if pos + 4 > blen:
            return pos, "more"
        ln = (buf[pos] << 8) | buf[pos + 1]
        if ln < 4 or buf[pos + 2] or buf[pos + 3]:
            return pos, "bad"
        nxt = pos + ln
        if nxt > blen:
            return pos, "more"
        append(pos)
        pos = nxt
        n += 1
    return pos, "full"


def _iter_variable(f: BinaryIO, block_records: int) -> Iterator[RecordBlock | FramingError]:
    buf = bytearray()
    buf_off = 0  # file offset of buf[0]
    pos = 0  # next RDW in buf
    eof = False
    rec_no = 1
    while True:
        found: list[int] = []  # RDW positions of this block's records in buf
        problem: FramingError | None = None
        while True:
            pos, why = _scan_rdws(buf, pos, block_records - len(found), found)
            if why == "full":
                break
            if why == "bad":
                ln = (buf[pos] << 8) | buf[pos + 1]
                problem = _bad_rdw(f, buf, pos, buf_off, rec_no + len(found), ln)
                break
            if eof:  # "more" at the end of the file
                if pos < len(buf):
                    problem = _truncated(buf, pos, buf_off, rec_no + len(found))
                break
            # keep only this block's bytes, then read more
            start = found[0] if found else pos
            if start:
                del buf[:start]
                buf_off += start
                pos -= start
                found = [x - start for x in found]
            need = (buf[pos] << 8 | buf[pos + 1]) if pos + 2 <= len(buf) else 0
            more = f.read(max(_V_CHUNK, need))
            if more:
                buf += more
            else:
                eof = True
        if found:
            yield _variable_block(buf, found, pos, rec_no, buf_off)
            rec_no += len(found)
        if problem is not None:
            yield problem
            return
        if eof and pos >= len(buf):
            return


def _truncated(buf: bytearray, pos: int, buf_off: int, rec_no: int) -> FramingError:
    left = len(buf) - pos
    if left < 4:
        detail = f"{left} bytes after the last whole record (too short for a 4-byte RDW)"
    else:
        ln = (buf[pos] << 8) | buf[pos + 1]
        detail = (f"RDW at offset {buf_off + pos} declares {ln} bytes but only {left} remain in the file "
                  "(truncated last record)")
    return FramingError(rec_no, buf_off + pos, "trailing_bytes", detail, bytes(buf[pos:]))


def _variable_block(buf: bytearray, found: list[int], end: int, rec_no: int, buf_off: int) -> RecordBlock:
    """Scatter the payloads of back-to-back V records into a zero-padded matrix."""
    start = found[0]
    region = np.frombuffer(buf, np.uint8, count=end - start, offset=start)
    rdw_pos = np.asarray(found, np.int64) - start
    lengths = ((region[rdw_pos].astype(np.int64) << 8) | region[rdw_pos + 1]) - 4
    n = len(lengths)
    keep = np.ones(end - start, bool)
    keep[(rdw_pos[:, None] + np.arange(4)).ravel()] = False
    payload = region[keep]
    del region  # release the export of buf before it is resized
    width = int(lengths.max()) if n else 0
    data = np.zeros((n, width), np.uint8)
    if width:
        data[np.arange(width) < lengths[:, None]] = payload
    return RecordBlock(first_record_no=rec_no, data=data, lengths=lengths,
                       offsets=buf_off + start + rdw_pos, fixed_length=False)


def _bad_rdw(f: BinaryIO, buf: bytearray, pos: int, buf_off: int, rec_no: int, ln: int) -> FramingError:
    hdr = bytes(buf[pos:pos + 4])
    why = (f"declares length {ln} (less than the 4 RDW bytes)" if ln < 4
           else f"has non-zero reserved bytes 0x{hdr[2]:02X}{hdr[3]:02X}")
    rest = bytearray(buf[pos:pos + MAX_RAW_REST])
    total = len(buf) - pos
    while True:
        chunk = f.read(_V_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if len(rest) < MAX_RAW_REST:
            rest += chunk[: MAX_RAW_REST - len(rest)]
    capped = " (raw holds the first 16 MiB)" if total > len(rest) else ""
    return FramingError(
        rec_no, buf_off + pos, "bad_rdw",
        f"RDW {hdr.hex(' ').upper()} at offset {buf_off + pos} {why}; records after it cannot be "
        f"resynchronised, so the remaining {total} bytes of the file are reported as this one error{capped}",
        bytes(rest),
    )


# --------------------------------------------------------------------------- decimal helpers


def decimal_array(unscaled: np.ndarray, precision: int, scale: int, mask: np.ndarray | None = None) -> pa.Array:
    """Exact ``decimal128(precision, scale)`` array from unscaled integers.

    ``unscaled`` is an integer numpy array (int64 fast path) or an object array
    of Python ints (any 128-bit value; ``None`` entries become null).  The
    16-byte little-endian two's complement buffer is built directly, never
    through floats.  ``mask`` (True = null) is optional.  Values must fit the
    precision (not re-checked here, for speed).
    """
    arr = np.asarray(unscaled)
    n = len(arr)
    if arr.dtype == object:
        nones = np.equal(arr, None)
        if nones.any():
            arr = np.where(nones, 0, arr)
            mask = nones if mask is None else (np.asarray(mask, bool) | nones)
        m64 = (1 << 64) - 1
        lo = (arr & m64).astype(np.uint64)
        hi = (arr >> 64).astype(np.int64)
    elif arr.dtype.kind in "iu":
        if arr.dtype == np.uint64:
            lo = arr
            hi = np.zeros(n, np.int64)
        else:
            a = arr.astype(np.int64, copy=False)
            lo = a.view(np.uint64)
            hi = a >> 63
    else:
        raise TypeError(f"decimal_array needs integer unscaled values, not {arr.dtype}")
    buf = np.empty((n, 2), np.uint64)
    buf[:, 0] = lo
    buf[:, 1] = hi.view(np.uint64)
    validity, nulls = _validity(mask, n)
    return pa.Array.from_buffers(pa.decimal128(precision, scale), n, [validity, pa.py_buffer(buf)], null_count=nulls)


def _validity(mask: np.ndarray | None, n: int) -> tuple[pa.Buffer | None, int]:
    if mask is None:
        return None, 0
    mask = np.asarray(mask, bool)
    nulls = int(mask.sum())
    if not nulls:
        return None, 0
    return pa.py_buffer(np.packbits(~mask, bitorder="little")), nulls


def _digits_value(D: np.ndarray) -> np.ndarray:
    """Integer value of rows of decimal digits (n, k): int64, or Python ints beyond 18 digits."""
    n, k = D.shape
    if k <= 18:
        v = np.zeros(n, np.int64)
        for j in range(k):
            v *= 10
            v += D[:, j]
        return v
    hi = _digits_value(D[:, : k - 18]).astype(object)
    lo = _digits_value(D[:, k - 18:]).astype(object)
    return hi * (10 ** 18) + lo


def _int_digits(mag: np.ndarray, k: int) -> np.ndarray:
    """Decimal digits (n, k) uint8 of non-negative integers (int64 or Python ints)."""
    n = len(mag)
    D = np.zeros((n, k), np.uint8)
    if mag.dtype == object:
        lo64 = (mag % (10 ** 18)).astype(np.int64)
        hi64 = (mag // (10 ** 18)).astype(np.int64)
        D[:, max(0, k - 18):] = _int_digits(lo64, min(k, 18))
        if k > 18:
            D[:, : k - 18] = _int_digits(hi64, k - 18)
        return D
    m = mag.astype(np.int64, copy=True)
    for j in range(k - 1, -1, -1):
        m, r = np.divmod(m, 10)
        D[:, j] = r
    return D


# --------------------------------------------------------------------------- field decoders
# Each returns (values, null, bad): values are unscaled integers (int64 or
# object), float64, or None for text (built later from the bytes); null and bad
# are bool arrays or None.


def _columns(data: np.ndarray) -> np.ndarray:
    """Column-major copy ``(width, n)`` of a record matrix, transposed in cache-sized blocks.

    Field views ``cols[offset:offset + length].T`` then have contiguous byte
    columns, so every per-column numpy pass runs at memory speed.
    """
    n, w = data.shape
    out = np.empty((w, n), np.uint8)
    step = max(64, (1 << 16) // max(w, 1))
    for s in range(0, n, step):
        out[:, s:s + step] = data[s:s + step].T
    return out


def _lookup(table: np.ndarray, sub: np.ndarray) -> np.ndarray:
    """``table[sub]`` keeping the memory layout of a column-major view."""
    if sub.flags.f_contiguous and not sub.flags.c_contiguous:
        return np.take(table, sub.T).T
    return np.take(table, sub)


def _col_reduce(a: np.ndarray, op: Callable) -> np.ndarray:
    """Reduce (n, L) over axis 1, column by column: fast for column-major views
    (see ``_columns``) and for narrow row-major ones; ``reduce`` otherwise."""
    if a.shape[1] > 8 and not a.flags.f_contiguous:
        return op.reduce(a, axis=1)
    acc = a[:, 0].copy()
    for j in range(1, a.shape[1]):
        op(acc, a[:, j], out=acc)
    return acc


def _rows_all_equal(sub: np.ndarray, byte: int) -> np.ndarray:
    eq = sub[:, 0] == byte
    for j in range(1, sub.shape[1]):
        eq &= sub[:, j] == byte
    return eq


def _dec_zoned(f: Field, sub: np.ndarray, codec: _Codec):
    n, L = sub.shape
    neg = None
    if f.sign_separate:
        sb = sub[:, 0] if f.sign_leading else sub[:, L - 1]
        D = _lookup(codec.digit, sub[:, 1:] if f.sign_leading else sub[:, : L - 1])
        neg = sb == codec.minus
        bad = ~(neg | (sb == codec.plus))
    else:
        D = _lookup(codec.digit, sub)
        bad = np.zeros(n, bool)
        if f.signed:
            sp = 0 if f.sign_leading else L - 1
            sb = sub[:, sp]
            D[:, sp] = np.take(codec.over_digit, sb)
            neg = np.take(codec.over_neg, sb)
    bad |= _col_reduce(D, np.maximum) > 9
    if bad.any():
        D[D > 9] = 0
    v = _digits_value(D)
    if neg is not None:
        v = np.where(neg, -v, v)
    if f.blank_when_zero:
        blank = _rows_all_equal(sub, codec.space)
        if blank.any():
            bad &= ~blank
            v = np.where(blank, 0, v)
    return v, None, bad


_PACKED_POS = np.zeros(16, bool)
_PACKED_POS[[0xA, 0xC, 0xE, 0xF]] = True
_PACKED_NEG = np.zeros(16, bool)
_PACKED_NEG[[0xB, 0xD]] = True
# value 0-99 of a byte holding two digit nibbles, 255 if a nibble is not a digit
_PACKED_PAIR = np.full(256, 255, np.uint8)
for _h in range(10):
    for _l in range(10):
        _PACKED_PAIR[(_h << 4) | _l] = 10 * _h + _l


def _dec_packed(f: Field, sub: np.ndarray, codec: _Codec):
    n, L = sub.shape
    last = sub[:, L - 1]
    sign = last & 0x0F
    top = last >> 4
    pad = 2 * L - 1 - f.digits
    bad = top > 9
    if f.digits <= 18:
        v = np.zeros(n, np.int64)
        if L > 1:
            pairs = _lookup(_PACKED_PAIR, sub[:, : L - 1])
            bad |= _col_reduce(pairs, np.maximum) > 99
            if pad:
                bad |= sub[:, 0] > 0x0F
            for j in range(L - 1):
                v *= 100
                v += pairs[:, j]
        v *= 10
        v += top
    else:
        D = np.empty((n, 2 * L - 1), np.uint8)
        D[:, 0::2] = sub >> 4
        D[:, 1::2] = sub[:, : L - 1] & 0x0F
        badd = D > 9
        bad |= _col_reduce(badd, np.logical_or)
        if pad:
            bad |= D[:, 0] != 0
        if bad.any():
            D[badd] = 0
        v = _digits_value(D[:, pad:])
    if f.signed:
        neg = np.take(_PACKED_NEG, sign)
        bad |= ~(neg | np.take(_PACKED_POS, sign))
        v = np.where(neg, -v, v)
    else:
        bad |= sign != 0x0F
    return v, None, bad


def _big_endian_words(sub: np.ndarray) -> np.ndarray:
    """Big-endian unsigned integers (uint64) of rows of 2, 4 or 8 bytes, built column by column."""
    acc = np.zeros(sub.shape[0], np.uint64)
    for j in range(sub.shape[1]):
        acc <<= np.uint64(8)
        acc |= sub[:, j]
    return acc


def _dec_binary(f: Field, sub: np.ndarray, codec: _Codec):
    n, L = sub.shape
    u = _big_endian_words(sub)
    if f.signed:
        if L == 8:
            return u.view(np.int64), None, None
        v = u.astype(np.int64)
        v[v >= 2 ** (8 * L - 1)] -= 2 ** (8 * L)
        return v, None, None
    if L < 8:
        return u.astype(np.int64), None, None
    if f.native_binary and f.scale == 0:  # decimal128(20, 0)
        return u, None, None
    big = u > np.uint64(2 ** 63 - 1)
    if f.scale != 0:  # decimal output: keep values beyond int64 exact
        return (u.astype(object) if big.any() else u.view(np.int64)), None, None
    return u.view(np.int64), (big if big.any() else None), None


def _dec_float(f: Field, sub: np.ndarray, fmt: str):
    n, L = sub.shape
    w = _big_endian_words(sub)
    if fmt == "ieee":
        return (w.astype(np.uint32).view(np.float32).astype(np.float64) if L == 4 else w.view(np.float64)), None, None
    fb = 24 if L == 4 else 56
    frac = (w & np.uint64((1 << fb) - 1)).astype(np.float64)
    exp = ((w >> np.uint64(fb)) & np.uint64(0x7F)).astype(np.int64)
    neg = (w >> np.uint64(fb + 7)) & np.uint64(1)
    val = np.ldexp(frac, 4 * (exp - 64) - fb)
    return np.where(neg == 1, -val, val), None, None


def _dec_text(f: Field, sub: np.ndarray, codec: _Codec):
    """Text is null when all low-values or all high-values, bad with an invalid byte or a NUL."""
    lo = _col_reduce(sub, np.minimum)
    hi = _col_reduce(sub, np.maximum)
    null = (hi == 0) | (lo == 0xFF)
    if codec.bad_from is not None:  # bad bytes are NUL and everything >= bad_from
        bad = (lo == 0) | (hi >= codec.bad_from)
    elif codec.bad_only_nul:
        bad = lo == 0
    else:
        bad = _col_reduce(_lookup(codec.text_bad, sub), np.logical_or)
    return None, null, bad & ~null


def _dec_edited(f: Field, sub: np.ndarray, codec: _Codec, want_pos: bool = False):
    """Decode an edited numeric picture position by position (see ``edit_roles``)."""
    roles = _roles(f.edit_symbols)
    n = sub.shape[0]
    sp, minus, plus = codec.space, codec.minus, codec.plus
    star = codec.byte("*")
    dig = _lookup(codec.digit, sub)
    bad = np.zeros(n, bool)
    badpos = np.full(n, -1, np.int64) if want_pos else None
    neg = np.zeros(n, bool)
    seen = np.zeros(n, bool)
    point_blank = np.zeros(n, bool)
    digits: list[np.ndarray] = []
    fill = star if any(r[0] == "zsup" and r[1] == "*" for r in roles) else sp
    float_sym = next((r[1] for r in roles if r[0] == "float_lead"), None)
    sym_bytes = {"+": (plus, minus), "-": (minus,), "$": (codec.byte("$"),)}.get(float_sym or "", ())

    def mark(cond: np.ndarray, p: int) -> None:
        nonlocal bad
        bad |= cond
        if badpos is not None:
            badpos[cond & (badpos < 0)] = p

    def is_sym(b: np.ndarray) -> np.ndarray:
        out = np.zeros(n, bool)
        for sb in sym_bytes:
            out |= b == sb
        return out

    p = 0
    for role, sym, _frac in roles:
        if role == "crdb":
            b0, b1 = sub[:, p], sub[:, p + 1]
            isneg = (b0 == codec.byte(sym[0])) & (b1 == codec.byte(sym[1]))
            mark(~(isneg | ((b0 == sp) & (b1 == sp))), p)
            neg |= isneg
            p += 2
            continue
        b = sub[:, p]
        d = dig[:, p]
        if role == "digit":
            isd = d <= 9
            mark(~isd, p)
            seen |= isd
            digits.append(np.where(isd, d, 0))
        elif role == "zsup":
            isd = d <= 9
            isfill = b == (star if sym == "*" else sp)
            mark(~(isd | isfill) | (seen & isfill), p)
            seen |= isd
            digits.append(np.where(isd, d, 0))
        elif role == "float":
            isd = d <= 9
            s = is_sym(b)
            mark(~(isd | s | (b == sp)) | (seen & ~isd), p)
            seen |= isd
            if float_sym in "+-":
                neg |= b == minus
            digits.append(np.where(isd, d, 0))
        elif role == "float_lead":
            mark(~(is_sym(b) | (b == sp)), p)
            if float_sym in "+-":
                neg |= b == minus
        elif role == "insert":
            ch = codec.byte(" " if sym == "B" else sym)
            ok_char = b == ch
            s = is_sym(b)
            mark(~(ok_char | (b == sp) | (b == fill) | s) | (seen & ~ok_char), p)
            if float_sym in ("+", "-"):
                neg |= s & (b == minus)
        elif role == "point":
            isb = b == sp
            mark(~((b == codec.byte(".")) | isb), p)
            point_blank |= isb
        elif role == "sign":
            ok = (b == minus) | (b == sp) | ((b == plus) if sym == "+" else False)
            mark(~ok, p)
            neg |= b == minus
        elif role == "currency":
            mark(~((b == codec.byte("$")) | (b == sp)), p)
        p += 1
    v = _digits_value(np.column_stack(digits))
    bad |= point_blank & (v != 0)
    if f.blank_when_zero:
        blank = _rows_all_equal(sub, sp)
        bad &= ~blank
        v = np.where(blank, 0, v)
    v = np.where(neg, -v, v)
    if want_pos:
        return v, None, bad, badpos
    return v, None, bad


@lru_cache(maxsize=256)
def _roles(symbols: tuple[str, ...]) -> list[tuple[str, str, bool]]:
    return edit_roles(symbols)


def _decode_field(f: Field, cols: np.ndarray, codec: _Codec, fmt: str):
    """Decode one field from the column-major record matrix (see ``_columns``)."""
    sub = cols[f.offset:f.offset + f.length].T
    if f.kind == "text":
        return _dec_text(f, sub, codec)
    if f.kind == "zoned":
        return _dec_zoned(f, sub, codec)
    if f.kind == "packed":
        return _dec_packed(f, sub, codec)
    if f.kind == "binary":
        return _dec_binary(f, sub, codec)
    if f.kind == "float":
        return _dec_float(f, sub, fmt)
    if f.kind == "edited":
        return _dec_edited(f, sub, codec)
    raise AssertionError(f.kind)  # pragma: no cover


# --------------------------------------------------------------------------- explanations (bad records only)


def _hex(raw: bytes) -> str:
    return raw.hex(" ").upper()


def _explain(f: Field, raw: bytes, codec: _Codec) -> str:
    """Human-readable reason why this field's bytes are invalid (byte values only)."""
    if f.kind == "packed":
        nibbles = []
        for b in raw:
            nibbles += [b >> 4, b & 0xF]
        sign = nibbles.pop()
        pad = len(nibbles) - f.digits
        for i, nib in enumerate(nibbles):
            if nib > 9:
                return f"packed decimal has invalid digit nibble 0x{nib:X} in byte {i // 2 + 1} (bytes {_hex(raw)})"
        if pad and nibbles[0]:
            return (f"packed decimal has non-zero pad nibble 0x{nibbles[0]:X} in byte 1 but the PIC holds only "
                    f"{f.digits} digits (bytes {_hex(raw)})")
        if not f.signed and sign != 0xF:
            return f"packed decimal has sign nibble 0x{sign:X} but an unsigned field needs 0xF (bytes {_hex(raw)})"
        return f"packed decimal has invalid sign nibble 0x{sign:X} (bytes {_hex(raw)})"
    if f.kind == "zoned":
        L = len(raw)
        if f.sign_separate:
            sp = 0 if f.sign_leading else L - 1
            if raw[sp] not in (codec.plus, codec.minus):
                return f"zoned decimal has separate sign byte 0x{raw[sp]:02X} (expected '+' or '-') (bytes {_hex(raw)})"
        sp = (0 if f.sign_leading else L - 1) if f.signed and not f.sign_separate else -1
        digit_range = "0xF0-0xF9" if codec.ebcdic else "0x30-0x39"
        for i, b in enumerate(raw):
            if f.sign_separate and i == (0 if f.sign_leading else L - 1):
                continue
            if i == sp:
                if codec.over_digit[b] > 9:
                    return f"zoned decimal has invalid sign byte 0x{b:02X} at position {i + 1} (bytes {_hex(raw)})"
            elif codec.digit[b] > 9:
                if codec.ebcdic and not f.signed and i == L - 1 and codec.over_digit[b] <= 9:
                    return (f"unsigned zoned decimal has sign zone 0x{b >> 4:X} in its last byte 0x{b:02X} "
                            f"(expected 0xF) (bytes {_hex(raw)})")
                what = "a space" if b == codec.space else f"0x{b:02X}"
                return f"zoned decimal has {what} at position {i + 1} (expected a digit {digit_range}) (bytes {_hex(raw)})"
        return f"zoned decimal is invalid (bytes {_hex(raw)})"
    if f.kind == "text":
        for i, b in enumerate(raw):
            if codec.text_bad[b]:
                if _undecodable(codec, b):
                    return f"text has byte 0x{b:02X} at position {i + 1}, which is not valid in {codec.name}"
                return f"text has a NUL character (byte 0x{b:02X}) at position {i + 1} but is not all low-values"
        return "text is invalid"  # pragma: no cover
    if f.kind == "edited":
        arr = np.frombuffer(raw, np.uint8).reshape(1, -1)
        _v, _n, _b, pos = _dec_edited(f, arr, codec, want_pos=True)
        p = int(pos[0])
        if p >= 0:
            return (f"edited value does not match PIC '{f.picture}' at position {p + 1} (byte 0x{raw[p]:02X}; "
                    f"bytes {_hex(raw)})")
        return f"edited value does not match PIC '{f.picture}' (bytes {_hex(raw)})"
    return "invalid value"  # pragma: no cover


@lru_cache(maxsize=4096)
def _undecodable_cached(name: str, b: int) -> bool:
    try:
        bytes([b]).decode(name)
        return False
    except UnicodeDecodeError:
        return True


def _undecodable(codec: _Codec, b: int) -> bool:
    return _undecodable_cached(codec.name, b)


# --------------------------------------------------------------------------- building Arrow columns


def _text_array(sub: np.ndarray, codec: _Codec, null: np.ndarray | None) -> pa.Array:
    """UTF-8 string array from code-page bytes, trailing spaces removed.

    The kept bytes of all records are gathered with one numpy mask and decoded
    in a single call of the codec (C speed); offsets come from the per-record
    byte counts, corrected for characters that need several UTF-8 bytes.
    """
    n, L = sub.shape
    if n == 0:
        return pa.array([], pa.string())
    nonsp = sub != codec.space
    tlen = L - np.argmax(nonsp[:, ::-1], axis=1)
    tlen[~_col_reduce(nonsp, np.logical_or)] = 0
    if null is not None:
        tlen[null] = 0
    kept = sub[np.arange(L) < tlen[:, None]]
    utf8 = kept.tobytes().decode(codec.name).encode("utf-8")
    nbytes = tlen.astype(np.int64)
    if len(utf8) != len(kept):  # some characters take 2-3 UTF-8 bytes
        extra = np.zeros(len(kept) + 1, np.int64)
        np.cumsum(np.take(codec.utf8_len, kept) - 1, out=extra[1:])
        ends = np.cumsum(nbytes)
        nbytes += extra[ends] - extra[ends - nbytes]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(nbytes, out=offsets[1:])
    if offsets[-1] >= 2 ** 31:
        raise ValueError("a text column of this block exceeds 2 GiB; use a smaller block_records")
    validity, nulls = _validity(null, n)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(utf8), validity, nulls)


def _number_array(f: Field, values: np.ndarray, null: np.ndarray | None) -> pa.Array:
    if f.kind == "float":
        return pa.array(values, pa.float64(), mask=null)
    t = f.arrow_type
    if f.scale < 0:  # P scaling: stored digits times a power of ten
        m = 10 ** -f.scale
        values = values * m if pa.types.is_integer(t) else np.asarray(values).astype(object) * m
    if pa.types.is_integer(t):
        return pa.array(values.astype(np.int64, copy=False), pa.int64(), mask=null)
    return decimal_array(values, t.precision, t.scale, mask=null)


# --------------------------------------------------------------------------- decode_block / decode_file


def decode_block(
    copybook: Copybook,
    block: RecordBlock,
    *,
    encoding: str = "cp037",
    float_format: str | None = None,
) -> DecodeResult:
    """Decode a block of records, one vectorized pass per field.

    Good records go to ``table`` (``record_no`` then ``copybook.columns``), bad
    ones to ``quarantine`` - each bad record once, with the first problem (see
    the module docstring for precedence).  Fields in a REDEFINES area that do
    not decode become null instead of quarantining the record.
    """
    codec = _codec(encoding)
    fmt = _float_format(codec, float_format)
    data = np.asarray(block.data)
    if data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError("block.data must be a 2-D uint8 array")
    n = data.shape[0]
    if data.shape[1] < copybook.record_length:
        padded = np.zeros((n, copybook.record_length), np.uint8)
        padded[:, : data.shape[1]] = data
        data = padded
    lengths = np.asarray(block.lengths, np.int64)
    offsets = np.asarray(block.offsets, np.int64)
    fields = copybook.fields
    cols = _columns(data[:, : copybook.record_length])

    first = np.full(n, -1, np.int32)
    problems: list[tuple[str | None, str, Callable[[int], str]]] = []

    def flag(mask: np.ndarray | None, field: str | None, reason: str, detail: Callable[[int], str]) -> None:
        if mask is None:
            return
        sel = mask & (first < 0)
        if sel.any():
            problems.append((field, reason, detail))
            first[sel] = len(problems) - 1

    def field_detail(f: Field) -> Callable[[int], str]:
        return lambda r: _explain(f, data[r, f.offset:f.offset + f.length].tobytes(), codec)

    decoded: dict[int, tuple] = {}
    odo = copybook.odo
    count: np.ndarray | None = None
    if odo is None:
        reclen = copybook.record_length
        flag(lengths != reclen, None, "record_length",
             lambda r: f"length {lengths[r]}, copybook expects {reclen}")
    else:
        cf = fields[odo.counter_index]
        need = cf.offset + cf.length
        flag(lengths < need, cf.name, "record_length",
             lambda r: f"length {lengths[r]} is too short to hold {cf.name} (bytes {cf.offset + 1}-{need}); "
                       f"copybook expects at least {copybook.min_length}")
        decoded[odo.counter_index] = res = _decode_field(cf, cols, codec, fmt)
        cvals, cnull, cbad = res
        flag(cbad, cf.name, _REASON_BY_KIND.get(cf.kind, "record_length"), field_detail(cf))
        cnt = np.asarray(cvals)
        if cnt.dtype != np.int64:  # unsigned 8-byte binary counter
            cnt = np.minimum(cnt.astype(np.uint64), np.uint64(odo.max_count + 1)).astype(np.int64)
        cbad_mask = cbad if cbad is not None else np.zeros(n, bool)
        oor = ((cnt < odo.min_count) | (cnt > odo.max_count)) & ~cbad_mask
        if cnull is not None:
            cnt = np.where(cnull, odo.max_count + 1, cnt)
            oor |= cnull
        flag(oor, cf.name, "odo_out_of_range",
             lambda r: f"{cf.name}={cnt[r]} is outside OCCURS {odo.min_count} TO {odo.max_count}")
        count = np.where(cbad_mask | oor, 0, cnt)
        if not block.fixed_length:
            expected = odo.offset + count * odo.element_length
            flag(lengths != expected, cf.name, "record_length",
                 lambda r: f"length {lengths[r]}, copybook expects {expected[r]} for {cf.name}={count[r]}")

    outputs: list[tuple[Field, Any, np.ndarray | None]] = []
    for i, f in enumerate(fields):
        if f.filler:
            continue
        res = decoded.pop(i, None) or _decode_field(f, cols, codec, fmt)
        values, null, bad = res
        if f.odo is not None and count is not None:
            present = count >= f.odo.index
            if bad is not None:
                bad = bad & present
            null = ~present if null is None else (null | ~present)
        if f.in_redefines:
            if bad is not None and bad.any():
                null = bad if null is None else (null | bad)
        elif bad is not None:
            flag(bad, f.name, _REASON_BY_KIND[f.kind], field_detail(f))
        outputs.append((f, values, null))

    good = first < 0
    all_good = bool(good.all())
    rows = None if all_good else np.flatnonzero(good)
    arrays = [pa.array(block.first_record_no + (np.arange(n, dtype=np.int64) if all_good else rows), pa.int64())]
    for f, values, null in outputs:
        if rows is not None:
            null = null[rows] if null is not None else None
            values = values[rows] if values is not None else None
        if f.kind == "text":
            sub = data[:, f.offset:f.offset + f.length] if rows is None else data[rows, f.offset:f.offset + f.length]
            arrays.append(_text_array(sub, codec, null))
        else:
            arrays.append(_number_array(f, values, null))
    table = pa.Table.from_arrays(arrays, schema=copybook.schema)

    if all_good:
        quarantine = QUARANTINE_SCHEMA.empty_table()
    else:
        bad_rows = np.flatnonzero(~good)
        fields_col, reasons, details, raws = [], [], [], []
        for r in bad_rows:
            field, reason, detail = problems[first[r]]
            fields_col.append(field)
            reasons.append(reason)
            details.append(detail(int(r)))
            raws.append(np.asarray(block.data)[r, : lengths[r]].tobytes())
        quarantine = pa.Table.from_arrays(
            [
                pa.array(block.first_record_no + bad_rows, pa.int64()),
                pa.array(offsets[bad_rows], pa.int64()),
                pa.array(fields_col, pa.string()),
                pa.array(reasons, pa.string()),
                pa.array(details, pa.string()),
                pa.array(raws, pa.binary()),
            ],
            schema=QUARANTINE_SCHEMA,
        )
    return DecodeResult(table=table, quarantine=quarantine)


def _framing_result(copybook: Copybook, err: FramingError) -> DecodeResult:
    quarantine = pa.Table.from_pylist(
        [{"record_no": err.record_no, "offset": err.offset, "field": None, "reason": err.reason,
          "detail": err.detail, "raw": err.raw}],
        schema=QUARANTINE_SCHEMA,
    )
    return DecodeResult(table=copybook.schema.empty_table(), quarantine=quarantine)


def decode_file(
    path: Any,
    copybook: Copybook,
    *,
    record_format: Literal["F", "V"],
    encoding: str = "cp037",
    block_records: int = 50_000,
    float_format: str | None = None,
) -> Iterator[DecodeResult]:
    """Frame and decode a whole file block by block; framing errors become quarantine rows."""
    _codec(encoding)  # fail fast on a bad encoding
    for item in iter_record_blocks(path, copybook, record_format=record_format, block_records=block_records):
        if isinstance(item, FramingError):
            yield _framing_result(copybook, item)
        else:
            yield decode_block(copybook, item, encoding=encoding, float_format=float_format)


# --------------------------------------------------------------------------- JSON


def to_json_records(copybook: Copybook, table: pa.Table, *, include_record_no: bool = False) -> Iterator[dict]:
    """Nested records following the group tree (groups -> dicts, OCCURS -> lists).

    ODO lists are truncated to the counter; FILLER is omitted; keys are output
    names without occurrence suffix; decimals are ``decimal.Decimal``, integers
    ``int``, text ``str``, null ``None``.
    """
    batches = [table] if isinstance(table, pa.RecordBatch) else table.to_batches()
    for batch in batches:
        cols = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        missing = [c for c in copybook.columns if c not in cols]
        if missing:
            raise ValueError(f"table lacks columns of copybook {copybook.name}: {', '.join(missing[:5])}")
        build = _compile_group(copybook.tree, (), cols)
        recs = cols.get("record_no")
        for i in range(batch.num_rows):
            rec = build(i)
            if include_record_no and recs is not None:
                rec = {"record_no": recs[i], **rec}
            yield rec


def _compile_group(node: Node, idx: tuple[int, ...], cols: dict[str, list]) -> Callable[[int], dict]:
    parts = [(child.name, _compile(child, idx, cols)) for child in node.children]
    return lambda i: {name: fn(i) for name, fn in parts}


def _compile(node: Node, idx: tuple[int, ...], cols: dict[str, list]) -> Callable[[int], Any]:
    def element(ix: tuple[int, ...]) -> Callable[[int], Any]:
        if node.is_group:
            return _compile_group(node, ix, cols)
        col = cols[node.column(ix)]
        return col.__getitem__

    if node.occurs is None:
        return element(idx)
    elems = [element(idx + (k,)) for k in range(1, node.occurs + 1)]
    if node.depending_on is None:
        return lambda i: [e(i) for e in elems]
    counter = cols[node.depending_on]
    mx = node.occurs
    return lambda i: [e(i) for e in elems[: max(0, min(counter[i] or 0, mx))]]


# --------------------------------------------------------------------------- encoding: values


_MISSING = object()


def _column_length(values: Any) -> int | None:
    try:
        return len(values)
    except TypeError:
        return None


def _to_unscaled(f: Field, values: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Unscaled integers at the field's scale (int64 or object) and a null mask.

    Integer inputs (numpy/pyarrow integer arrays, Python ints in a list) are the
    UNSCALED value when the field has scale > 0, and the value itself for scale
    <= 0.  Decimals (pyarrow decimal, ``decimal.Decimal``, numeric strings) and
    floats are values; floats are rounded to the field's scale.
    """
    scale = f.scale
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        null = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
        t = values.type
        if pa.types.is_decimal(t):
            v = _decimal_unscaled(f, values, max(scale, 0))
            if null is not None:
                v = np.where(null, 0, v)
            return _downscale(f, v, null), null
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            arr = pc.fill_null(values, 0).to_numpy(zero_copy_only=False)
            return _from_numpy(f, arr, null), null
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return _from_list(f, values.to_pylist())
        raise TypeError(f"{f.name}: cannot encode a {t} column into {f.kind} PIC {f.picture}")
    if isinstance(values, np.ndarray) and values.dtype != object:
        return _from_numpy(f, values, None), None
    if hasattr(values, "to_numpy") and not isinstance(values, (list, tuple)):
        arr = values.to_numpy()
        if arr.dtype != object:
            return _from_numpy(f, arr, None), None
        values = list(arr)
    return _from_list(f, list(values))


def _decimal_unscaled(f: Field, arr: pa.Array, target_scale: int) -> np.ndarray:
    t = arr.type
    if not (pa.types.is_decimal128(t) and t.scale == target_scale):
        try:
            arr = arr.cast(pa.decimal128(38, target_scale))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ValueError(f"{f.name}: values do not fit PIC {f.picture} with {target_scale} decimal places: {e}") from None
    buf = arr.buffers()[1]
    words = np.frombuffer(buf, np.uint64, count=2 * (arr.offset + len(arr)))[2 * arr.offset:].reshape(-1, 2)
    lo = words[:, 0]
    hi = words[:, 1].view(np.int64)
    lo64 = lo.view(np.int64)
    if np.array_equal(hi, lo64 >> 63):
        return lo64.copy()
    return hi.astype(object) * (1 << 64) + lo.astype(object)


def _downscale(f: Field, v: np.ndarray, null: np.ndarray | None) -> np.ndarray:
    """For P-scaled fields (scale < 0) turn a value into its stored digits."""
    if f.scale >= 0:
        return v
    m = 10 ** -f.scale
    rem = v % m
    bad = rem != 0
    if null is not None:
        bad &= ~null
    if np.any(bad):
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{f.name}: value {v[r]} at row {r} is not a multiple of {m} (PIC {f.picture})")
    return v // m


def _from_numpy(f: Field, arr: np.ndarray, null: np.ndarray | None) -> np.ndarray:
    if arr.dtype.kind == "b":
        raise TypeError(f"{f.name}: cannot encode booleans into PIC {f.picture}")
    if arr.dtype.kind in "iu":
        if arr.dtype == np.uint64 and arr.size and arr.max() > np.uint64(2 ** 63 - 1):
            v = arr.astype(object)
        else:
            v = arr.astype(np.int64)
        return v if f.scale > 0 else _downscale(f, v, null)
    if arr.dtype.kind == "f":
        x = np.where(np.isnan(arr), 0.0, arr) if null is not None else arr
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{f.name}: cannot encode NaN or infinite values into PIC {f.picture}")
        if f.scale >= 0:
            return np.rint(x * 10.0 ** f.scale).astype(np.int64)
        return np.rint(x / 10.0 ** -f.scale).astype(np.int64)
    raise TypeError(f"{f.name}: cannot encode {arr.dtype} values into PIC {f.picture}")


_EXACT = decimal.Context(prec=100, Emax=999_999, Emin=-999_999)


def _from_list(f: Field, items: list) -> tuple[np.ndarray, np.ndarray | None]:
    out: list[int] = []
    null = np.zeros(len(items), bool)
    for r, x in enumerate(items):
        if x is None:
            null[r] = True
            out.append(0)
        elif isinstance(x, bool):
            raise TypeError(f"{f.name}: cannot encode booleans into PIC {f.picture}")
        elif isinstance(x, (int, np.integer)):
            x = int(x)
            if f.scale > 0:
                out.append(x)
            else:
                m = 10 ** -f.scale
                if x % m:
                    raise ValueError(f"{f.name}: value {x} at row {r} is not a multiple of {m} (PIC {f.picture})")
                out.append(x // m)
        else:
            try:
                d = x if isinstance(x, decimal.Decimal) else decimal.Decimal(str(x))
            except decimal.InvalidOperation:
                raise ValueError(f"{f.name}: {x!r} at row {r} is not a number") from None
            if not d.is_finite():
                raise ValueError(f"{f.name}: {x!r} at row {r} is not a finite number")
            s = d.scaleb(f.scale, context=_EXACT)
            if isinstance(x, float):
                s = s.to_integral_value(rounding=decimal.ROUND_HALF_EVEN, context=_EXACT)
            if s != s.to_integral_value(context=_EXACT):
                raise ValueError(f"{f.name}: value {x} at row {r} has more decimal places than PIC {f.picture} allows")
            out.append(int(s))
    lim = 2 ** 63 - 1
    if all(-lim <= x <= lim for x in out):
        v = np.array(out, np.int64)
    else:
        v = np.empty(len(out), object)
        v[:] = out
    return v, (null if null.any() else None)


def _check_range(f: Field, v: np.ndarray, null: np.ndarray | None) -> None:
    if f.kind == "binary" and f.native_binary:
        bits = 8 * f.length
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if f.signed else (0, 2 ** bits - 1)
        what = f"a {f.length}-byte {'signed' if f.signed else 'unsigned'} binary"
    else:
        hi = 10 ** f.digits - 1
        lo = -hi if f.signed else 0
        what = f"PIC {f.picture}" + (f" {f.usage}" if f.usage != "DISPLAY" else "")
    if v.dtype == object:
        bad = np.array([(x < lo or x > hi) for x in v], bool) if len(v) else np.zeros(0, bool)
    else:
        bad = np.zeros(len(v), bool)
        if lo > -(2 ** 63):
            bad |= v < lo
        if hi < 2 ** 63 - 1:
            bad |= v > hi
    if null is not None:
        bad &= ~null
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        x = int(v[r])
        shown = decimal.Decimal(x).scaleb(-f.scale) if f.scale > 0 else x * 10 ** max(0, -f.scale)
        limit = (f"range {lo} to {hi}" if f.kind == "binary" and f.native_binary
                 else f"{f.digits} digits{'' if f.signed else ', unsigned'}")
        raise ValueError(f"{f.name}: value {shown} at row {r} does not fit {what} ({limit})")


def _as_strings(f: Field, values: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        null = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            values = values.cast(pa.string())
        obj = pc.fill_null(values, "").to_numpy(zero_copy_only=False)
        return (obj.astype(str) if len(obj) else np.zeros(0, "U1")), null
    if isinstance(values, np.ndarray) and values.dtype.kind == "U":
        return values, None
    items = list(values.to_numpy() if hasattr(values, "to_numpy") else values)
    null = np.array([x is None for x in items], bool)
    if not items:
        return np.zeros(0, "U1"), None
    strs = np.array(["" if x is None else (x if isinstance(x, str) else str(x)) for x in items], dtype=str)
    return strs, (null if null.any() else None)


# --------------------------------------------------------------------------- encoding: field encoders


def _enc_text(f: Field, values: Any, n: int, codec: _Codec) -> tuple[np.ndarray, np.ndarray | None]:
    strs, null = _as_strings(f, values, n)
    L = f.length
    lens = np.strings.str_len(strs) if len(strs) else np.zeros(0, np.int64)
    if len(lens) and lens.max() > L:
        r = int(np.flatnonzero(lens > L)[0])
        raise ValueError(f"{f.name}: text of {int(lens[r])} characters at row {r} is longer than PIC {f.picture} "
                         f"({L} bytes)")
    u = np.ascontiguousarray(strs.astype(f"<U{L}"))
    cps = u.view(np.uint32).reshape(len(strs), L)
    pad = np.arange(L) >= lens[:, None]
    top = len(codec.enc) - 1
    b = codec.enc[np.minimum(cps, top)]
    bad = ((cps > top) | (b < 0)) & ~pad
    if bad.any():
        r, c = (int(x[0]) for x in np.nonzero(bad))
        raise ValueError(f"{f.name}: character {chr(int(cps[r, c]))!r} at row {r} cannot be encoded in {codec.name}")
    out = b.astype(np.uint8)
    out[pad] = codec.space
    if null is not None:
        out[null] = 0  # null text is written as low-values
    return out, null


def _enc_zoned(f: Field, v: np.ndarray, codec: _Codec) -> np.ndarray:
    neg = v < 0
    D = _int_digits(np.where(neg, -v, v), f.digits)
    body = codec.digit_bytes[D]
    if f.sign_separate:
        sign = np.where(neg, codec.minus, codec.plus).astype(np.uint8)[:, None]
        return np.hstack([sign, body] if f.sign_leading else [body, sign])
    if f.signed:
        sp = 0 if f.sign_leading else f.digits - 1
        d = D[:, sp]
        if codec.ebcdic:
            body[:, sp] = np.where(neg, 0xD0, 0xC0).astype(np.uint8) | d
        else:
            body[:, sp] = np.where(neg, _ASCII_NEG[d], _ASCII_POS[d])
    return body


_ASCII_POS = np.frombuffer(b"{ABCDEFGHI", np.uint8)
_ASCII_NEG = np.frombuffer(b"}JKLMNOPQR", np.uint8)


def _enc_packed(f: Field, v: np.ndarray) -> np.ndarray:
    n = len(v)
    L = f.length
    neg = v < 0
    N = np.zeros((n, 2 * L), np.uint8)
    N[:, 2 * L - 1 - f.digits: 2 * L - 1] = _int_digits(np.where(neg, -v, v), f.digits)
    N[:, -1] = np.where(neg, 0xD, 0xC) if f.signed else 0xF
    return (N[:, 0::2] << 4) | N[:, 1::2]


def _enc_binary(f: Field, v: np.ndarray) -> np.ndarray:
    n = len(v)
    dt = f">{'i' if f.signed else 'u'}{f.length}"
    src = np.array(v, dtype=np.uint64) if (v.dtype == object and not f.signed) else v
    return np.ascontiguousarray(np.asarray(src).astype(dt)).view(np.uint8).reshape(n, f.length)


def _enc_float(f: Field, x: np.ndarray, fmt: str) -> np.ndarray:
    n = len(x)
    L = f.length
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{f.name}: cannot encode NaN or infinite COMP-{1 if L == 4 else 2} values")
    if fmt == "ieee":
        return np.ascontiguousarray(x.astype(f">f{L}")).view(np.uint8).reshape(n, L)
    fb = 24 if L == 4 else 56
    neg = np.signbit(x) & (x != 0)
    m, e = np.frexp(np.abs(x))  # |x| = m * 2**e, 0.5 <= m < 1
    E = -((-e) // 4)  # ceil(e / 4): |x| = F * 16**E with 1/16 <= F < 1
    F = np.ldexp(m, e - 4 * E)
    frac = np.rint(np.ldexp(F, fb)).astype(np.uint64)
    carry = frac >= np.uint64(1 << fb)
    frac = np.where(carry, np.uint64(1 << (fb - 4)), frac)
    E = np.where(carry, E + 1, E)
    expo = E.astype(np.int64) + 64
    zero = x == 0
    under = (expo < 0) & ~zero
    if np.any((expo > 127) & ~zero):
        r = int(np.flatnonzero((expo > 127) & ~zero)[0])
        raise ValueError(f"{f.name}: {x[r]!r} at row {r} is too large for IBM hexadecimal floating point")
    frac = np.where(zero | under, np.uint64(0), frac)
    expo = np.where(zero | under, 0, expo).astype(np.uint64)
    word = (neg.astype(np.uint64) << np.uint64(fb + 7)) | (expo << np.uint64(fb)) | frac
    return np.ascontiguousarray(word.astype(f">u{L}")).view(np.uint8).reshape(n, L)


def _enc_edited(f: Field, v: np.ndarray, codec: _Codec) -> np.ndarray:
    """Render values through an edited picture (zero suppression, floating symbols, signs)."""
    roles = _roles(f.edit_symbols)
    n = len(v)
    neg = v < 0
    if neg.any() and not f.signed:
        r = int(np.flatnonzero(neg)[0])
        raise ValueError(f"{f.name}: negative value at row {r} but PIC {f.picture} has no sign symbol")
    D = _int_digits(np.where(neg, -v, v), f.digits)
    # byte position of each role and digit index of digit positions
    pos, dix, p, k = [], [], 0, 0
    for role, _sym, _frac in roles:
        pos.append(p)
        if role in ("digit", "zsup", "float"):
            dix.append(k)
            k += 1
        else:
            dix.append(-1)
        p += 2 if role == "crdb" else 1
    L = p
    sp = codec.space
    star = codec.byte("*")
    fill = star if any(r[0] == "zsup" and r[1] == "*" for r in roles) else sp
    float_sym = next((r[1] for r in roles if r[0] == "float_lead"), None)
    # first position that stops suppression: a 9, the decimal point, a fraction digit
    static_cut = L
    for (role, _sym, frac), q in zip(roles, pos):
        if role == "digit" or role == "point" or (role in ("zsup", "float") and frac):
            static_cut = q
            break
    cut = np.full(n, static_cut, np.int64)
    for (role, _sym, frac), q, j in reversed(list(zip(roles, pos, dix))):
        if role in ("zsup", "float") and not frac and q < static_cut:
            cut = np.where(D[:, j] != 0, q, cut)
    if float_sym == "+":
        sym = np.where(neg, codec.minus, codec.plus).astype(np.uint8)
    elif float_sym == "-":
        sym = np.where(neg, codec.minus, sp).astype(np.uint8)
    elif float_sym == "$":
        sym = np.full(n, codec.byte("$"), np.uint8)
    else:
        sym = None
    out = np.empty((n, L), np.uint8)
    for (role, s, _frac), q, j in zip(roles, pos, dix):
        if role == "crdb":
            out[:, q] = np.where(neg, codec.byte(s[0]), sp)
            out[:, q + 1] = np.where(neg, codec.byte(s[1]), sp)
            continue
        digit = codec.digit_bytes[D[:, j]] if j >= 0 else None
        before = q < cut
        if role == "digit":
            out[:, q] = digit
        elif role == "zsup":
            out[:, q] = np.where(before, star if s == "*" else sp, digit)
        elif role in ("float", "float_lead", "insert"):
            if role == "insert":
                char = codec.byte(" " if s == "B" else s)
                shown = np.full(n, char, np.uint8)
                supp = fill if sym is None else sp
            else:
                shown = digit if role == "float" else np.full(n, sp, np.uint8)
                supp = sp
            val = np.where(before, supp, shown)
            if sym is not None:
                val = np.where(q == cut - 1, sym, val)
            out[:, q] = val
        elif role == "point":
            out[:, q] = codec.byte(".")
        elif role == "sign":
            out[:, q] = np.where(neg, codec.minus, codec.plus if s == "+" else sp)
        elif role == "currency":
            out[:, q] = codec.byte("$")
    # a zero value with no 9 in the picture: Z/floating -> all spaces, * -> all * but the point
    if not any(r[0] == "digit" for r in roles):
        zero = ~D.any(axis=1)
        if zero.any():
            if fill == star:
                blank_row = np.full(L, star, np.uint8)
                for (role, _s, _f), q in zip(roles, pos):
                    if role == "point":
                        blank_row[q] = codec.byte(".")
            else:
                blank_row = np.full(L, sp, np.uint8)
            out[zero] = blank_row
    return out


# --------------------------------------------------------------------------- encode_matrix / frame_records


def _field_bytes(f: Field, values: Any, n: int, codec: _Codec, fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Encode one column: (n, f.length) bytes and the null mask of the input."""
    if f.kind == "text":
        return _enc_text(f, values, n, codec)
    if f.kind == "float":
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            null = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
            x = pc.fill_null(values, 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            items = values if isinstance(values, np.ndarray) else list(values)
            if isinstance(items, list):
                null = np.array([v is None for v in items], bool)
                x = np.array([0.0 if v is None else float(v) for v in items], np.float64)
                null = null if null.any() else None
            else:
                null = None
                x = items.astype(np.float64)
        return _enc_float(f, x, fmt), null
    v, null = _to_unscaled(f, values, n)
    if len(v) != n:
        raise ValueError(f"{f.name}: column has {len(v)} values, expected {n}")
    _check_range(f, v, null)
    if f.kind == "zoned":
        return _enc_zoned(f, v, codec), null
    if f.kind == "packed":
        return _enc_packed(f, v), null
    if f.kind == "binary":
        return _enc_binary(f, v), null
    if f.kind == "edited":
        return _enc_edited(f, v, codec), null
    raise AssertionError(f.kind)  # pragma: no cover


def _default_bytes(f: Field, codec: _Codec, fmt: str) -> np.ndarray:
    """Bytes of a missing column: spaces for text, zero for numbers."""
    if f.kind == "text":
        return np.full(f.length, codec.space, np.uint8)
    if f.kind == "float":
        return _enc_float(f, np.zeros(1), fmt)[0]
    return _field_bytes(f, np.zeros(1, np.int64), 1, codec, fmt)[0][0]


def encode_matrix(
    copybook: Copybook,
    columns: Mapping[str, Any],
    n: int,
    *,
    encoding: str = "cp037",
    float_format: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode ``n`` records into a ``(n, record_length)`` uint8 matrix and their lengths.

    ``columns`` maps output field names to ``n`` values each (a pyarrow Table or
    RecordBatch also works; ``record_no`` is ignored).  Missing columns become
    spaces (text) or zeros (numbers); FILLER is spaces.  Text: str sequences,
    numpy ``U`` arrays or pyarrow strings; too long -> ValueError naming the
    field; null -> low-values.  Numbers: pyarrow decimal/integer arrays, numpy
    integer arrays, or lists of ``decimal.Decimal``/int.  INTEGER inputs are the
    decoded value for scale <= 0 but the UNSCALED integer when the field has
    scale > 0 (``PIC 9(3)V99`` with ``np.array([12345])`` is 123.45); decimals
    are always values.  Null numbers are written as zero.  Inside a REDEFINES,
    a redefining view overwrites the redefined one only where it is given and
    not null.  Record lengths of an ODO copybook follow the counter column.
    Signs are written in the preferred form: packed C/D (F unsigned), zoned
    overpunch C/D (EBCDIC) or ``{A-I}``/``}J-R`` (ASCII).
    """
    codec = _codec(encoding)
    fmt = _float_format(codec, float_format)
    if isinstance(columns, (pa.Table, pa.RecordBatch)):
        columns = {name: columns.column(name) for name in columns.schema.names}
    known = set(copybook.columns)
    unknown = [k for k in columns.keys() if k not in known and k != "record_no"]
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(map(str, unknown[:5]))} for copybook {copybook.name}; "
                         f"columns are {', '.join(copybook.columns[:10])}{' ...' if len(known) > 10 else ''}")
    L = copybook.record_length
    M = np.full((n, L), codec.space, np.uint8)
    counter_values: np.ndarray | None = None
    odo = copybook.odo
    for f in copybook.fields:
        if f.filler:
            continue
        sl = slice(f.offset, f.offset + f.length)
        values = columns[f.name] if f.name in columns else _MISSING
        if values is _MISSING:
            if f.redefines_role == 2:
                continue
            if f.kind != "text":
                M[:, sl] = _default_bytes(f, codec, fmt)
            continue
        k = _column_length(values)
        if k is not None and k != n:
            raise ValueError(f"{f.name}: column has {k} values, expected {n}")
        enc, null = _field_bytes(f, values, n, codec, fmt)
        if null is not None and f.redefines_role == 2:
            keep = ~null
            M[keep, sl] = enc[keep]
        else:
            M[:, sl] = enc
        if odo is not None and f.name == odo.counter:
            v, cnull = _to_unscaled(f, values, n)
            counter_values = np.where(cnull, 0, v) if cnull is not None else v
    lengths = np.full(n, L, np.int64)
    if odo is not None:
        counts = np.zeros(n, np.int64) if counter_values is None else np.asarray(counter_values, np.int64)
        oor = (counts < odo.min_count) | (counts > odo.max_count)
        if oor.any():
            r = int(np.flatnonzero(oor)[0])
            raise ValueError(f"{odo.counter}: count {counts[r]} at row {r} is outside OCCURS "
                             f"{odo.min_count} TO {odo.max_count}")
        lengths = odo.offset + counts * odo.element_length
    return M, lengths


def frame_records(matrix: np.ndarray, lengths: np.ndarray, record_format: Literal["F", "V"]) -> bytes:
    """Serialize encoded records: ``F`` writes every row in full, ``V`` prefixes RDWs and cuts rows to ``lengths``."""
    M = np.ascontiguousarray(matrix, dtype=np.uint8)
    if M.ndim != 2:
        raise ValueError("matrix must be 2-D")
    n, W = M.shape
    if record_format == "F":
        return M.tobytes()
    if record_format != "V":
        raise ValueError(f"record_format must be 'F' or 'V', not {record_format!r}")
    lengths = np.asarray(lengths, np.int64)
    if len(lengths) != n:
        raise ValueError(f"{len(lengths)} lengths for {n} records")
    if n and (lengths.min() < 0 or lengths.max() > W):
        raise ValueError(f"record lengths must be between 0 and the matrix width {W}")
    if n and lengths.max() + 4 > 0xFFFF:
        raise ValueError("records longer than 65531 bytes do not fit an RDW (spanned records are not supported)")
    out = np.empty((n, W + 4), np.uint8)
    rl = lengths + 4
    out[:, 0] = rl >> 8
    out[:, 1] = rl & 0xFF
    out[:, 2:4] = 0
    out[:, 4:] = M
    return out[np.arange(W + 4) < rl[:, None]].tobytes()


def encode_records(
    copybook: Copybook,
    columns: Mapping[str, Any],
    n: int,
    *,
    encoding: str = "cp037",
    record_format: Literal["F", "V"] = "F",
    float_format: str | None = None,
) -> bytes:
    """``encode_matrix`` then ``frame_records``: the bytes of a whole file."""
    matrix, lengths = encode_matrix(copybook, columns, n, encoding=encoding, float_format=float_format)
    return frame_records(matrix, lengths, record_format)
