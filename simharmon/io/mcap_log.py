"""One or more MCAP files (a single ``.mcap``, or the files of a rosbag2 folder) read as one log.

Messages come in log-time order across the files (ties: earlier file, then file order). A message
is addressed by a :class:`MessageRef`: its file, log time, and ordinal among the same topic's
messages of that file sharing that log time, which is stable between reads because the mcap
reader breaks log-time ties by file position. Every read error becomes a DriveError naming the
file (a truncated file has no footer: ``mcap recover`` can repair it).
"""

from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from mcap.exceptions import McapError
from mcap.reader import McapReader, make_reader
from mcap.records import Attachment, Channel, Message, Schema

from .drive import DriveError

__all__ = ["MessageRef", "LogChannel", "McapLog", "READ_ERRORS"]

# What the mcap reader raises on corrupt, truncated or foreign files.
READ_ERRORS = (McapError, ValueError, OSError, EOFError, struct.error, KeyError, IndexError)


@dataclass(frozen=True)
class MessageRef:
    """Where a message is: file index, log time (ns), its ordinal among equal log times, publish time."""

    file: int
    log_time: int
    ordinal: int
    publish_time: int = 0
    sequence: int = 0


@dataclass(frozen=True)
class LogChannel:
    """A topic of the log: its schema (None for schemaless channels), message encoding and metadata."""

    topic: str
    schema: Optional[Schema]
    message_encoding: str
    metadata: Dict[str, str]

    @property
    def schema_name(self) -> str:
        return self.schema.name if self.schema is not None else ""


class McapLog:
    """Read MCAP ``paths`` as one log (see the module docstring). Call :meth:`close` when done."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise DriveError("no MCAP files given")
        for path in self.paths:
            if not path.is_file():
                raise FileNotFoundError(f"MCAP file not found: {path}")
        self._handles: Dict[int, Tuple[BinaryIO, McapReader]] = {}
        self.channels: Dict[str, LogChannel] = {}
        self.profile = ""
        for index, path in enumerate(self.paths):
            reader = self._reader(index)
            summary = self._guard(index, reader.get_summary)
            if summary is None:
                raise DriveError(f"cannot read MCAP {path}: it has no summary section (written by a streaming "
                                 "writer that did not finish?); `mcap recover` rewrites it with one")
            if index == 0:
                self.profile = self._guard(index, reader.get_header).profile
            for channel in summary.channels.values():
                schema = summary.schemas.get(channel.schema_id) if channel.schema_id else None
                self._add_channel(path, channel, schema)

    def _add_channel(self, path: Path, channel: Channel, schema: Optional[Schema]) -> None:
        known = self.channels.get(channel.topic)
        entry = LogChannel(channel.topic, schema, channel.message_encoding, dict(channel.metadata or {}))
        if known is None:
            self.channels[channel.topic] = entry
        elif (known.schema_name, known.message_encoding) != (entry.schema_name, entry.message_encoding):
            raise DriveError(f"{path}: topic {channel.topic} carries both {known.schema_name or 'schemaless'} "
                             f"({known.message_encoding}) and {entry.schema_name or 'schemaless'} "
                             f"({entry.message_encoding}) messages")

    def _guard(self, index: int, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except READ_ERRORS as exc:
            raise DriveError(f"cannot read MCAP {self.paths[index]}: {type(exc).__name__}: {exc} "
                             "(corrupt or truncated? `mcap doctor` checks a file)") from exc

    def _reader(self, index: int) -> McapReader:
        """The shared reader of file ``index`` (for complete, non-interleaved reads)."""
        if index not in self._handles:
            handle = open(self.paths[index], "rb")
            try:
                reader = self._guard(index, make_reader, handle)
            except DriveError:
                handle.close()
                raise
            self._handles[index] = (handle, reader)
        return self._handles[index][1]

    def metadata(self) -> List[Tuple[str, Dict[str, str]]]:
        """The metadata records of every file, in order."""
        return [(record.name, dict(record.metadata)) for index in range(len(self.paths))
                for record in self._guard(index, lambda i=index: list(self._reader(i).iter_metadata()))]

    def attachments(self) -> List[Attachment]:
        """The attachment records of every file, in order."""
        return [record for index in range(len(self.paths))
                for record in self._guard(index, lambda i=index: list(self._reader(i).iter_attachments()))]

    def close(self) -> None:
        for handle, _ in self._handles.values():
            handle.close()
        self._handles.clear()

    # -- iteration ------------------------------------------------------------------------------
    def _iter_file(self, index: int, topics: Optional[List[str]], start: Optional[int]
                   ) -> Iterator[Tuple[int, Optional[Schema], Channel, Message]]:
        """Messages of one file on its own handle (so several iterations can interleave)."""
        with open(self.paths[index], "rb") as handle:
            reader = self._guard(index, make_reader, handle)
            iterator = self._guard(index, reader.iter_messages, topics=topics, starting_at=start,
                                   log_time_order=True)
            while True:
                item = self._guard(index, next, iterator, None)
                if item is None:
                    return
                yield (index, *item)

    def iter_messages(self, topics: Optional[Iterable[str]] = None, start: Optional[int] = None
                      ) -> Iterator[Tuple[MessageRef, LogChannel, bytes]]:
        """Every message of ``topics`` (all when None) from log time ``start`` on, in log-time order."""
        wanted = None if topics is None else sorted(set(topics))
        streams = [self._iter_file(i, wanted, start) for i in range(len(self.paths))]
        merged = heapq.merge(*streams, key=lambda item: (item[3].log_time, item[0]))
        last: Dict[Tuple[int, str], Tuple[int, int]] = {}
        for index, _schema, channel, message in merged:
            key = (index, channel.topic)
            previous_time, count = last.get(key, (None, -1))
            ordinal = count + 1 if previous_time == message.log_time else 0
            last[key] = (message.log_time, ordinal)
            ref = MessageRef(index, int(message.log_time), ordinal, int(message.publish_time), int(message.sequence))
            yield ref, self.channels[channel.topic], message.data

    def read(self, topic: str, ref: MessageRef) -> bytes:
        """The payload of the message ``ref`` on ``topic``."""
        reader = self._reader(ref.file)
        iterator = self._guard(ref.file, reader.iter_messages, topics=[topic], starting_at=ref.log_time,
                               ending_before=ref.log_time + 1, log_time_order=True)
        skip = ref.ordinal
        while True:
            item = self._guard(ref.file, next, iterator, None)
            if item is None:
                break
            if skip == 0:
                return item[2].data
            skip -= 1
        raise DriveError(f"{self.paths[ref.file]}: message at log time {ref.log_time} on {topic} not found again "
                         "(did the file change?)")

    def read_many(self, topic: str, refs: Sequence[MessageRef]) -> Iterator[bytes]:
        """Payloads of ``refs`` (in log-time order) on ``topic``, reading each file sequentially."""
        position = 0
        while position < len(refs):
            file = refs[position].file
            end = position
            while end < len(refs) and refs[end].file == file:
                end += 1
            wanted = {(r.log_time, r.ordinal): n for n, r in enumerate(refs[position:end], position)}
            found = position
            last: Tuple[Optional[int], int] = (None, -1)
            for _, _schema, _channel, message in self._iter_file(file, [topic], refs[position].log_time):
                ordinal = last[1] + 1 if last[0] == message.log_time else 0
                last = (message.log_time, ordinal)
                if wanted.get((message.log_time, ordinal)) == found:
                    yield message.data
                    found += 1
                    if found == end:
                        break
                elif message.log_time > refs[found].log_time:
                    break
            if found != end:
                raise DriveError(f"{self.paths[file]}: message at log time {refs[found].log_time} on {topic} not "
                                 "found again (did the file change?)")
            position = end
