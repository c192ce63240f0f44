"""Split a SQL script into statements, as the Supabase CLI records them.

Understands single-quoted strings (with E'' escapes), quoted identifiers,
dollar-quoted bodies, line comments and nested block comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")


@dataclass(frozen=True)
class Statement:
    text: str
    line: int  # 1-based line of the statement's first character in the file


def _skip_quoted(sql: str, i: int, quote: str, backslash_escapes: bool) -> int:
    n = len(sql)
    i += 1
    while i < n:
        ch = sql[i]
        if backslash_escapes and ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return n


def split_statements(sql: str) -> list[Statement]:
    statements: list[Statement] = []
    n = len(sql)
    i = 0
    start = 0
    while i < n:
        ch = sql[i]
        nxt = sql[i + 1] if i + 1 < n else ""
        if ch == "-" and nxt == "-":
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch == "/" and nxt == "*":
            depth = 1
            i += 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth += 1
                    i += 2
                elif sql.startswith("*/", i):
                    depth -= 1
                    i += 2
                else:
                    i += 1
        elif ch == "'":
            escaped = i > 0 and sql[i - 1] in "eE" and (i < 2 or not sql[i - 2].isalnum())
            i = _skip_quoted(sql, i, "'", escaped)
        elif ch == '"':
            i = _skip_quoted(sql, i, '"', False)
        elif ch == "$" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            match = _DOLLAR_TAG.match(sql, i)
            if match:
                tag = match.group(0)
                end = sql.find(tag, match.end())
                i = n if end < 0 else end + len(tag)
            else:
                i += 1
        elif ch == ";":
            _append(statements, sql, start, i + 1)
            i += 1
            start = i
        else:
            i += 1
    _append(statements, sql, start, n)
    return statements


def _append(statements: list[Statement], sql: str, start: int, end: int) -> None:
    chunk = sql[start:end]
    stripped = chunk.strip()
    if not stripped or stripped == ";" or not _has_code(stripped):
        return
    offset = start + (len(chunk) - len(chunk.lstrip()))
    # Recorded without the trailing semicolon, as the Supabase CLI stores them.
    text = stripped[:-1].rstrip() if stripped.endswith(";") else stripped
    statements.append(Statement(text=text, line=sql.count("\n", 0, offset) + 1))


def _has_code(text: str) -> bool:
    without = re.sub(r"--[^\n]*", "", text)
    without = re.sub(r"/\*.*?\*/", "", without, flags=re.S)
    return bool(without.strip().strip(";").strip())
