"""Parsing a message from a file while most of its body text stays in the file.

The standard library's parser keeps each body as a list of lines and then as one
string, so a parsed message costs several times its size in memory. parse_file feeds
the parser a skeleton of the message instead, in which each long run of body lines is
replaced by one placeholder line. The tree it returns is the tree of the whole message,
except that payloads contain placeholders where the runs were. SpooledBodies expands
them again by reading the file, in chunks where the caller can take chunks.

A run consists only of lines that the parser reads as body text wherever they appear:
printable ASCII without a colon, not starting with "-", a space, a tab or "From ", and
ending in the message's line separator. The parser (Python 3.11 email.feedparser)
treats a line as a header only if it has a colon after printable characters, starts
with whitespace, or starts with "From ". A boundary line starts with "--", and an empty
line ends a header block. The placeholder line has the same properties, so the parser
builds the same tree around it. Base64 lines always qualify.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from email.feedparser import BytesFeedParser
from email.message import Message
from email.policy import compat32
from typing import BinaryIO

from .transfer import CHUNK_CHARS, ByteSink

READ_CHUNK_BYTES = 1024 * 1024

MIN_RUN_BYTES = 8 * 1024
"""Shorter runs are parsed in memory, which costs a few times their size but keeps the
number of placeholders small."""

_PLACEHOLDER_BYTES = 43  # "~", 32 hex digits, "-", 8 digits, "~"


def detect_linesep(first_chunk: bytes) -> str:
    """Return the line separator of a message from its first chunk: "\\n" or "\\r\\n"."""
    newline = first_chunk.find(b"\n")
    if newline > 0 and first_chunk[newline - 1 : newline] != b"\r":
        return "\n"
    return "\r\n"


def _run_pattern(linesep: bytes) -> re.Pattern[bytes]:
    line = rb"(?!From )[\x21-\x2c\x2e-\x39\x3b-\x7e][\t\x20-\x39\x3b-\x7e]*+" + re.escape(linesep)
    # Possessive repetition: nothing after the run can make it give lines back, and
    # the regex engine keeps no backtracking state per line.
    return re.compile(rb"(?m)^(?:" + line + rb")++")


class SpooledBodies:
    """Body runs of a message file that the parsed tree refers to by placeholder.

    A placeholder stands for the run's bytes without its final line separator, and the
    placeholder line keeps that separator, so expanding placeholders gives back the
    exact text the parser would have stored.
    """

    def __init__(self, source: BinaryIO | None = None) -> None:
        self._source = source
        self._runs: list[tuple[int, int]] = []  # (file offset, length) of each run
        token = secrets.token_hex(16)
        self._text_placeholder = re.compile(f"~{token}-([0-9]{{8}})~")
        self._bytes_placeholder = re.compile(f"~{token}-([0-9]{{8}})~".encode("ascii"))
        self._token = token

    def add_run(self, offset: int, length: int) -> bytes:
        """Record a run of ``length`` bytes at ``offset`` and return its placeholder."""
        self._runs.append((offset, length))
        return f"~{self._token}-{len(self._runs) - 1:08d}~".encode("ascii")

    def _run_bytes(self, index: int) -> Iterator[bytes]:
        offset, length = self._runs[index]
        assert self._source is not None  # runs are recorded only with a source
        done = 0
        while done < length:
            # Seek before every read, because another reader may have moved the file.
            self._source.seek(offset + done)
            data = self._source.read(min(READ_CHUNK_BYTES, length - done))
            if not data:
                raise OSError(
                    f"The message file ends inside the body run at offset {offset}, "
                    "so it changed after it was parsed"
                )
            done += len(data)
            yield data

    def text_chunks(self, text: str) -> Iterator[str]:
        """Yield ``text`` with its placeholders expanded, in pieces of at most a chunk."""
        position = 0
        if self._runs:
            for match in self._text_placeholder.finditer(text):
                yield from _slices(text, position, match.start())
                for data in self._run_bytes(int(match.group(1))):
                    # Runs are ASCII, which is how the parser decoded them as well.
                    yield data.decode("ascii")
                position = match.end()
        yield from _slices(text, position, len(text))

    def expand(self, text: str) -> str:
        """Return ``text`` with its placeholders expanded, all in memory."""
        if not self._runs or self._token not in text:
            return text
        return "".join(self.text_chunks(text))

    def expand_part(self, part: Message) -> None:
        """Put the whole payload back into a non-multipart part, for code that needs it.

        get_payload() decodes 8-bit text with the part's charset, and the placeholders
        must be replaced before any decoding. So the stored payload is read from the
        instance, as the parser left it.
        """
        stored = vars(part).get("_payload")
        if isinstance(stored, str) and self._runs and self._token in stored:
            part.set_payload(self.expand(stored))

    def write_expanded(self, data: bytes, out: ByteSink) -> int:
        """Write ``data`` to ``out`` up to a possible unfinished placeholder at its end.

        Returns how many bytes of ``data`` were written, expanded.
        """
        if not self._runs:
            out.write(data)
            return len(data)
        position = 0
        for match in self._bytes_placeholder.finditer(data):
            out.write(data[position : match.start()])
            for run in self._run_bytes(int(match.group(1))):
                out.write(run)
            position = match.end()
        # A "~" near the end may begin a placeholder that the next data ends.
        start = data.find(b"~", max(position, len(data) - _PLACEHOLDER_BYTES + 1))
        end = start if start >= 0 else len(data)
        out.write(data[position:end])
        return end

    def writer(self, out: ByteSink) -> ExpandingWriter:
        """Return a sink that writes to ``out`` with placeholders expanded."""
        return ExpandingWriter(self, out)


class ExpandingWriter:
    """A byte sink that replaces placeholders by their runs on the way to ``out``.

    Call close() at the end, because the last bytes written may be the start of a
    placeholder and are held back until then.
    """

    def __init__(self, bodies: SpooledBodies, out: ByteSink) -> None:
        self._bodies = bodies
        self._out = out
        self._tail = b""

    def write(self, data: bytes, /) -> int:
        buffer = self._tail + data
        self._tail = buffer[self._bodies.write_expanded(buffer, self._out) :]
        return len(data)

    def close(self) -> None:
        self._out.write(self._tail)
        self._tail = b""


NO_SPOOL = SpooledBodies()
"""For a message parsed in memory, whose payloads contain no placeholders."""


def _slices(text: str, start: int, end: int) -> Iterator[str]:
    for position in range(start, end, CHUNK_CHARS):
        yield text[position : min(position + CHUNK_CHARS, end)]


def parse_file(
    source: BinaryIO, min_run_bytes: int | None = None
) -> tuple[Message, str, SpooledBodies]:
    """Parse the message in a seekable binary file, from its current position.

    Returns the tree, the message's line separator, and the SpooledBodies that expands
    the tree's placeholders. The file must stay open and unchanged while they are used.
    """
    min_run = MIN_RUN_BYTES if min_run_bytes is None else min_run_bytes
    parser = BytesFeedParser(policy=compat32)
    bodies = SpooledBodies(source)

    data_offset = source.tell()
    data = source.read(READ_CHUNK_BYTES)
    linesep = detect_linesep(data)
    separator = linesep.encode("ascii")
    pattern = _run_pattern(separator)
    at_line_start = True
    while data:
        chunk = source.read(READ_CHUNK_BYTES)
        # Only whole lines are searched for runs, so a partial last line waits for the
        # next chunk. A line longer than a chunk is fed as it is and never in a run.
        end = len(data) if not chunk else data.rfind(b"\n") + 1
        if end == 0 and len(data) > READ_CHUNK_BYTES:
            end = len(data)
        if end:
            _feed(
                parser, bodies, pattern, separator, data[:end], data_offset, at_line_start, min_run
            )
            at_line_start = data[end - 1 : end] == b"\n"
        data_offset += end
        data = data[end:] + chunk
    return parser.close(), linesep, bodies


def _feed(
    parser: BytesFeedParser,
    bodies: SpooledBodies,
    pattern: re.Pattern[bytes],
    separator: bytes,
    window: bytes,
    window_offset: int,
    at_line_start: bool,
    min_run: int,
) -> None:
    """Feed ``window`` to the parser with its runs of at least ``min_run`` bytes replaced."""
    position = 0
    if not at_line_start:
        # The window continues a line fed earlier, and runs start only at a line start.
        position = window.find(b"\n") + 1 or len(window)
        parser.feed(window[:position])
    for match in pattern.finditer(window, position):
        if match.end() - match.start() < min_run:
            continue
        parser.feed(window[position : match.start()])
        length = match.end() - match.start() - len(separator)
        parser.feed(bodies.add_run(window_offset + match.start(), length) + separator)
        position = match.end()
    parser.feed(window[position:])
