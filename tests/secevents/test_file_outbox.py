"""The file outbox's reader: records of any size up to the limit, across segments, and damaged lines that are
reported and passed over without losing the records after them."""

from __future__ import annotations

import logging

import pytest

from gateway.secevents import outbox as outbox_mod
from gateway.secevents.outbox import FileOutbox, OutboxUnavailable, _segments


def envelope(i: int, pad: int = 0) -> dict:
    return {"id": f"ev-{i}", "kind": "x", "sid": None, "enqueued_ms": 0, "event": {"i": i, "pad": "x" * pad}}


async def read_all(ob: FileOutbox, after: str | None = None) -> list[str]:
    reader, got = ob.reader(after), []
    while True:
        recs = await reader.read(200, timeout=0)
        if not recs:
            return got
        got += [r.id for r in recs]


# a record longer than one read chunk: the reader made no progress on it, and once a later segment existed it
# jumped there, skipping it and the rest of its segment
@pytest.mark.parametrize("segment_bytes, after", [(8 * 1024 * 1024, 5), (8 * 1024 * 1024, 4500), (4096, 5)])
async def test_a_record_longer_than_a_read_chunk_is_read_and_nothing_after_it_is_skipped(tmp_path, segment_bytes,
                                                                                          after):
    ob = FileOutbox(tmp_path / "outbox", segment_bytes=segment_bytes)
    await ob.append(envelope(1))
    await ob.append(envelope(2, pad=outbox_mod.READ_CHUNK + 300_000))
    for i in range(3, 3 + after):
        await ob.append(envelope(i, pad=2000))
    ids = await read_all(ob)
    await ob.close()
    assert ids == [f"ev-{i}" for i in range(1, 3 + after)]


async def test_an_oversized_record_is_refused_when_appended(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_mod, "MAX_RECORD_BYTES", 64 * 1024)
    ob = FileOutbox(tmp_path / "outbox")
    with pytest.raises(OutboxUnavailable, match="record limit"):
        await ob.append(envelope(1, pad=100 * 1024))
    await ob.append(envelope(2))
    assert await read_all(ob) == ["ev-2"]
    await ob.close()


async def test_damaged_lines_are_reported_counted_and_the_records_after_them_delivered(tmp_path, monkeypatch, caplog):
    ob = FileOutbox(tmp_path / "outbox", segment_bytes=4096)
    await ob.append(envelope(1))
    await ob.append(envelope(2, pad=100 * 1024))  # over the limit set below: written by a build with a larger one
    for i in range(3, 12):
        await ob.append(envelope(i, pad=1000))
    await ob.close()
    segs = _segments(tmp_path / "outbox")
    assert len(segs) >= 3
    first = segs[0][1]
    lines = first.read_bytes().splitlines(keepends=True)
    first.write_bytes(lines[0] + b"{not json\n" + b"".join(lines[1:]))  # corruption between two records
    with open(segs[1][1], "ab") as f:  # a torn write left at the end of a segment that a later one follows
        f.write(b'{"seq":99,"id":"torn"')
    monkeypatch.setattr(outbox_mod, "MAX_RECORD_BYTES", 64 * 1024)

    ob = FileOutbox(tmp_path / "outbox", segment_bytes=4096)
    with caplog.at_level(logging.ERROR, logger="ztgate.events"):
        ids = await read_all(ob)
        assert await read_all(ob) == ids  # a second reader (or a backlog probe) does not count them again
    await ob.close()
    assert ids == ["ev-1"] + [f"ev-{i}" for i in range(3, 12)]
    assert ob.corrupt_records == 3
    reported = [r.getMessage() for r in caplog.records if "not a deliverable record" in r.getMessage()]
    assert len(reported) == 3
    assert any("not a record" in m for m in reported)
    assert any("longer than the record limit" in m for m in reported)
    assert any("torn line" in m for m in reported)



async def test_a_corrupt_last_line_does_not_stop_the_outbox_and_its_number_stays_used(tmp_path, caplog):
    # recovery parsed the newest segment's last line unguarded: a bad block there stopped the gateway from starting
    ob = FileOutbox(tmp_path / "outbox")
    for i in range(1, 4):
        await ob.append(envelope(i))
    await ob.close()
    [(_, path)] = _segments(tmp_path / "outbox")
    path.write_bytes(path.read_bytes() + b"\x00\x13garbage that was a record\n")
    with caplog.at_level(logging.ERROR, logger="ztgate.events"):
        ob = FileOutbox(tmp_path / "outbox")
    assert any("are not records" in r.getMessage() for r in caplog.records)
    await ob.append(envelope(5))
    records = await ob.reader(None).read(10, timeout=0)
    await ob.close()
    assert [(r.id, r.pos) for r in records] == [("ev-1", "1"), ("ev-2", "2"), ("ev-3", "3"), ("ev-5", "5")]
