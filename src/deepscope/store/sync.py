"""``deepscope sync DIR URL``: the runs of a directory copied into a PostgreSQL store, rows and files as they are."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import StoreError
from . import schema
from .catalog import list_runs
from .postgres import PostgresWriter
from .records import codec_named
from .records.scalar import KIND as SCALAR
from .sqlite import SQLiteReader


def sync(root: str | os.PathLike[str], url: str) -> list[tuple[str, str]]:
    """Copy every run under the directory ``root`` into the database at ``url``, named by its path below ``root``;
    returns ``(name, what happened)`` per run: ``"copied"``, ``"already there"`` or ``"skipped: <why>"``.

    Each run is copied in one transaction, so an interrupted sync leaves no half run: running it again copies what
    is missing and nothing twice. A run still being written is skipped (sync it once it is finished).
    """
    done = []
    for summary in list_runs(root):
        if summary.status in ("running", "unreadable"):
            done.append((summary.name, f"skipped: {summary.status}" + (f" ({summary.error})" if summary.error else "")))
            continue
        copied = copy_run(summary.path, url, summary.name)
        done.append((summary.name, "copied" if copied else "already there"))
    return done


def copy_run(source: Path, url: str, name: str) -> bool:
    """Copy the run directory ``source`` into the database as the run ``name``, rows and files as they are, in one
    transaction; ``False`` if a sync copied it before."""
    reader = SQLiteReader(source)
    writer = PostgresWriter(url, name, resume=True)
    try:
        if writer.info_value("synced_from") is not None:
            return False
        if writer.state.kinds:
            raise StoreError(f"{writer.location} exists and was not copied by sync; sync into another database")
        writer.begin(1)
        try:
            for key, value in reader.info().items():
                writer.set_value("run_info", key, json.dumps(value))
            writer.set_value("run_info", "synced_from", json.dumps(str(source)))
            for key, value in reader.config().items():
                writer.set_value("config", key, json.dumps(value))
            for tag, kind in reader.tags().items():
                found = reader.tag(tag)
                assert found is not None
                tag_id = writer.tag(tag, kind)
                if kind == SCALAR:
                    writer.append_scalars(tag_id, *reader.scalars(found[0], None, None), pack=True)
                    continue
                codec = codec_named(kind)
                table = codec.table if codec is not None else "objects"
                for stored in reader.records(table, found[0], None, None, None):
                    writer.put(table, tag_id, stored)
            for path in sorted((source / schema.FILES_DIR).rglob("*")):
                if path.is_file():
                    writer.put_file(path.relative_to(source).as_posix(), path.read_bytes())
            writer.commit()
        except BaseException:
            writer.rollback()
            raise
        return True
    finally:
        writer.close()
        reader.close()
