"""Run store: atomic writes, JSONL logs, content hashes and stage manifests.

Every file a run produces goes through `write_*` here so that a crash or `kill -9`
never leaves a half-written result behind: we write to a temp file in the same
directory and `os.replace` it (atomic on POSIX).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

from hrlaif.core.errors import UserError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(Path(path), text.encode("utf-8"))


def write_json(path: Path | str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def write_jsonl(path: Path | str, rows: Iterable[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows)
    write_text(path, text)


def append_jsonl(path: Path | str, row: dict) -> None:
    """Append one line and fsync: used for logs that must survive `kill -9` (PPO metrics, drift)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json(path: Path | str) -> Any:
    path = Path(path)
    if not path.exists():
        raise UserError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a leading BOM is not JSON
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text")
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON (line {e.lineno}: {e.msg})")


# ------------------------------------------------------------------------- JSON lines
# The one JSON-lines reader: every .jsonl the project reads (data, labels, samples, logs,
# benchmark files) goes through `parse_jsonl`, so a bad line is always the same one-line
# UserError naming the file and the line.

def parse_jsonl(lines: Iterable[str], where: str, *, torn_tail_ok: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of `lines` (as read from a file, newlines kept).

    `torn_tail_ok`: a last line that is not valid JSON and has no newline is dropped instead of
    raising: an append-only log whose writer was killed mid-line (the row is replayed anyway).
    """
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if torn_tail_ok and not line.endswith("\n"):
                return  # only the file's last line can lack its newline
            raise UserError(f"{where}:{lineno} is not valid JSONL ({e.msg})")
        if not isinstance(row, dict):
            raise UserError(f"{where}:{lineno} is not a JSON object")
        yield lineno, row


def iter_jsonl_numbered(path: Path | str, *, torn_tail_ok: bool = False) -> Iterator[tuple[int, dict]]:
    """`parse_jsonl` over a file: plain or gzip (told by its first bytes, not its suffix), UTF-8
    with or without a BOM; a missing or non-UTF-8 file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as f:
            yield from parse_jsonl(f, str(path), torn_tail_ok=torn_tail_ok)
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text")
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise UserError(f"{path} is a damaged gzip file ({e})")


def iter_jsonl(path: Path | str, *, torn_tail_ok: bool = False) -> Iterator[dict]:
    for _, row in iter_jsonl_numbered(path, torn_tail_ok=torn_tail_ok):
        yield row


def read_jsonl(path: Path | str, *, torn_tail_ok: bool = False) -> list[dict]:
    return list(iter_jsonl(path, torn_tail_ok=torn_tail_ok))


def read_json_records(path: Path | str) -> list:
    """The rows of a data file that is either a JSON array or JSON lines (the first non-blank
    character decides: `[` is an array). An empty file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start})")
    stripped = text.strip()
    if not stripped:
        raise UserError(f"{path} is empty")
    if stripped.startswith("["):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON (line {e.lineno}: {e.msg})")
    # StringIO splits on "\n" only, like a file: str.splitlines would also split inside strings at U+2028
    return [row for _, row in parse_jsonl(io.StringIO(text), str(path))]


def _json_default(o: Any) -> Any:
    # numpy scalars / arrays and Paths show up in results; keep json.dumps total.
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, set):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def file_hash(path: Path | str, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def tree_hash(path: Path | str, n: int = 16) -> str:
    """Hash of every file under a directory (names and contents)."""
    path = Path(path)
    if path.is_file():
        return file_hash(path, n)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(file_hash(p, 64).encode())
    return h.hexdigest()[:n]


def cache_dir() -> Path:
    """Where model conversions and output caches live (override with HRLAIF_CACHE)."""
    root = os.environ.get("HRLAIF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "hrlaif"
    )
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p
