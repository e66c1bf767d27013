"""Errors for people, and YAML read safely: which file, which line and field, what was expected, what to do.

The domain code (legacy/, canonical/, routing/) and the stores raise these; the CLI turns each into one message and
an exit code (`dagster_project/cli/common.py`), never a traceback:

    DataMashError   the work cannot be done, and the message says why               exit 1
      UsageError    a request naming what does not exist or is not allowed (an      exit 2, nothing changed
                    unknown wave, policy, source or drop; a bad option value)
        InputError  input that cannot be read: file, line (column), field, expected  exit 2, nothing changed
        SettingError  a setting that cannot be used (a database that does not answer)  exit 2, nothing changed

No Dagster here: the parsers import this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DataMashError", "InputError", "SettingError", "UsageError", "YamlDocument", "load_yaml", "parse_yaml"]


class DataMashError(Exception):
    """Work that cannot be done, said for the person who asked for it (exit 1 at the CLI)."""

    exit_code = 1


class UsageError(DataMashError):
    """A request that names something that does not exist or is not allowed; refused before anything changed."""

    exit_code = 2


class SettingError(UsageError):
    """A setting (an environment variable, a configuration) that cannot be used; nothing was changed."""


def _rebuild(cls: type, state: dict, args: tuple) -> "InputError":
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class InputError(UsageError, ValueError):
    """Input that cannot be read. Carries where (file, 1-based line and column, field) and what was expected;
    its message says all of it in one place: ``FILE line L, column C: FIELD: problem (expected X); hint``.

    A ``ValueError`` too, so that code catching the parsers' former errors keeps working.
    """

    def __init__(self, problem: str, *, file: str | Path | None = None, line: int | None = None,
                 column: int | None = None, field: str | None = None, expected: str | None = None,
                 hint: str | None = None) -> None:
        self.problem = problem
        self.file = None if file is None else str(file)
        self.line = line
        self.column = column
        self.field = field
        self.expected = expected
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where += (" " if where else "") + f"line {self.line}" + (
                f", column {self.column}" if self.column is not None else "")
        message = ": ".join(p for p in (where, self.field, self.problem) if p)
        if self.expected:
            message += f" (expected {self.expected})"
        if self.hint:
            message += f"; {self.hint}"
        return message

    def __reduce__(self):  # subclasses take other arguments: rebuild from the state, not by calling __init__
        return _rebuild, (type(self), dict(self.__dict__), self.args)


# --------------------------------------------------------------------------- YAML


@dataclass
class YamlDocument:
    """A YAML file read with the safe loader: its data, and where each key and item is (for messages)."""

    data: Any
    file: str
    node: yaml.Node | None

    def line(self, *path: str | int) -> int | None:
        """The 1-based line of the deepest node found along `path` (keys and list indexes), e.g.
        ``line("tables", "policies", "fields", "effective_date")``; None for an empty document."""
        node, line = self.node, None
        if node is not None:
            line = node.start_mark.line + 1
        for part in path:
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        line, node = key.start_mark.line + 1, value
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def _mark(error: yaml.YAMLError):
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return (mark.line + 1, mark.column + 1) if mark is not None else (None, None)


def parse_yaml(text: str, file: str | Path = "<yaml>", *, error: type[InputError] = InputError) -> YamlDocument:
    """Parse YAML text with the safe loader (no Python tags, ever); any problem is `error`, with file and line."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.constructor.ConstructorError as e:
        line, column = _mark(e)
        if "tag" not in (e.problem or ""):
            raise error(f"not valid YAML: {e.problem}", file=file, line=line, column=column) from None
        raise error(f"{e.problem}", file=file, line=line, column=column,
                    hint="YAML tags that build Python objects are refused: Data Mash reads YAML safely "
                         "(plain mappings, lists, text and numbers)") from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (a control character, say)
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise error(f"not valid YAML: character {chr(e.character)!r} is not allowed", file=file, line=line,
                    column=column) from None
    except yaml.YAMLError as e:
        line, column = _mark(e)
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        raise error(f"not valid YAML: {problem}" + (f" ({context})" if context else ""), file=file, line=line,
                    column=column) from None
    except RecursionError:
        raise error("not valid YAML here: nested too deeply", file=file) from None
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDocument(data, str(file), node)


def load_yaml(path: str | Path, *, error: type[InputError] = InputError) -> YamlDocument:
    """Read a YAML file (UTF-8) with the safe loader; an unreadable file, bytes that are not UTF-8 or text that is
    not YAML raise `error` naming the file and, where there is one, the line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise error(f"cannot read: {e.strerror or e}", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise error(f"not UTF-8 text: byte 0x{raw[e.start]:02x} ({e.reason})", file=path, line=line,
                    column=column, expected="a YAML file in UTF-8") from None
    return parse_yaml(text, path, error=error)
