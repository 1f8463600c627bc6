"""Read an adapter upload's multipart form: text fields capped at a few KiB, file parts streamed to disk.

Litestar's own form parser keeps every text field whole in memory, with no cap (only the number of parts is
limited), on a route that must lift the body-size limit for the adapter files.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser  # type: ignore[import-untyped]

from gateway.errors import InvalidRequest, PayloadTooLarge

MAX_FIELD_BYTES = 4096  # name and base_model are at most a few hundred characters
MAX_PARTS = 8  # name, base_model and up to three files (the two adapter files and peft's README.md)
_FLUSH = 1 << 20  # file parts reach the disk in writes of about this size, off the event loop


@dataclass
class UploadForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, BinaryIO] = field(default_factory=dict)  # by file name, each rewound

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


class _Part:
    def __init__(self, segment: MultipartSegment, spool_dir: Path | None) -> None:
        self.segment = segment
        self.text = bytearray()
        # unnamed, gone when closed: by UploadForm.close, or by read_upload_form on an error
        self.file: BinaryIO | None = tempfile.TemporaryFile(dir=spool_dir) if segment.filename else None  # noqa: SIM115
        self.pending = bytearray()

    async def add(self, data: bytes) -> None:
        if self.file is None:
            self.text += data
            if len(self.text) > MAX_FIELD_BYTES:
                name = str(self.segment.name)[:100]
                raise PayloadTooLarge(f"Form field {name!r} is longer than {MAX_FIELD_BYTES} bytes.", param=name)
            return
        self.pending += data
        if len(self.pending) >= _FLUSH:
            await self.flush()

    async def flush(self) -> None:
        if self.file is not None and self.pending:
            chunk, self.pending = bytes(self.pending), bytearray()
            await asyncio.to_thread(self.file.write, chunk)


async def read_upload_form(chunks: AsyncIterator[bytes], boundary: bytes, spool_dir: Path | None = None) -> UploadForm:
    """The form's text fields and files (temporary files in `spool_dir`); the caller closes them (UploadForm.close)."""
    form = UploadForm()
    opened: list[BinaryIO] = []
    part: _Part | None = None
    try:
        with PushMultipartParser(boundary, max_segment_count=MAX_PARTS) as parser:
            while not parser.closed:
                chunk = await anext(chunks, b"")
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        part = _Part(event, spool_dir)
                        if part.file is not None:
                            opened.append(part.file)
                    elif event:
                        assert part is not None
                        await part.add(event)
                    elif part is not None:
                        await part.flush()
                        _finish(form, part)
                        part = None
    except BaseException as exc:
        for handle in opened:
            handle.close()
        if isinstance(exc, ParserLimitReached):
            raise InvalidRequest(f"The form has too many parts (at most {MAX_PARTS}).", code="invalid_form") from exc
        if isinstance(exc, ParserError):
            raise InvalidRequest(f"The multipart/form-data body is malformed: {exc}", code="invalid_form") from exc
        raise
    return form


def _finish(form: UploadForm, part: _Part) -> None:
    name = str(part.segment.name)
    if part.file is None:
        form.fields[name] = part.text.decode(part.segment.charset or "utf-8", errors="replace")
        return
    part.file.seek(0)
    filename = str(part.segment.filename) or name
    if filename in form.files:
        form.files[filename].close()
    form.files[filename] = part.file
