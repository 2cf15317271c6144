"""search/catalogue.py: additions and removals by id, journaled, across restarts and processes."""
from __future__ import annotations

import json
import logging
import multiprocessing
import threading

import pytest

from search.catalogue import JOURNAL, Catalogue, CatalogueError, CatalogueItem
from search.index import DuplicateIdError, UnknownIdError


def item(i, data=None):
    return CatalogueItem(f"id-{i}", data or f"image {i}".encode(), {"n": i})


def test_additions_and_removals_survive_a_restart(tmp_path):
    cat = Catalogue(str(tmp_path))
    assert cat.add([item(1), item(2)]) == 2
    assert cat.remove(["id-1", "gallery-7"]) == 4
    assert cat.add([item(3)]) == 5
    again = Catalogue(str(tmp_path))  # a new process would do the same
    assert again.last_seq == 5
    current = again.current_items()
    assert list(current) == ["id-2", "id-3"]
    assert current["id-2"].image_bytes == b"image 2" and current["id-2"].metadata == {"n": 2}
    assert again.removed_ids() == {"id-1", "gallery-7"}


def test_ops_after_returns_the_later_ops_in_order(tmp_path):
    cat = Catalogue(str(tmp_path))
    cat.add([item(1)])
    cat.remove(["id-1"])
    cat.add([item(1, b"new bytes")])  # an id may come back after its removal
    ops = cat.ops_after(1)
    assert [(op.seq, op.kind, op.id) for op in ops] == [(2, "remove", "id-1"), (3, "add", "id-1")]
    with open(ops[1].image_path, "rb") as f:
        assert f.read() == b"new bytes"
    assert cat.ops_after(3) == []


def test_images_are_content_addressed_and_written_before_the_journal(tmp_path):
    cat = Catalogue(str(tmp_path))
    cat.add([item(1, b"same"), item(2, b"same")])
    paths = {op.image_path for op in cat.ops_after(0)}
    assert len(paths) == 1
    line = json.loads((tmp_path / JOURNAL).read_text().splitlines()[0])
    assert (tmp_path / line["image"]).read_bytes() == b"same"


def test_duplicate_and_repeated_removals_are_refused_whole(tmp_path):
    cat = Catalogue(str(tmp_path))
    cat.add([item(1)])
    with pytest.raises(DuplicateIdError, match="id-1"):
        cat.add([item(2), item(1)])
    with pytest.raises(DuplicateIdError, match="id-3"):
        cat.add([item(3), item(3)])
    assert list(cat.current_items()) == ["id-1"] and cat.last_seq == 1
    cat.remove(["id-1"])
    with pytest.raises(UnknownIdError, match="id-1"):
        cat.remove(["id-1"])
    with pytest.raises(CatalogueError, match="no image"):
        cat.add([CatalogueItem("x", b"")])


def test_a_torn_last_line_is_ignored_logged_and_cut_by_the_next_add(tmp_path, caplog):
    cat = Catalogue(str(tmp_path))
    cat.add([item(1)])
    with open(tmp_path / JOURNAL, "ab") as f:
        f.write(b'{"seq": 2, "kind": "add", "id": "id-2", "ima')  # a writer killed here
    with caplog.at_level(logging.WARNING, logger="cgd.search.catalogue"):
        restarted = Catalogue(str(tmp_path))
    assert "torn last line" in caplog.text
    assert restarted.last_seq == 1 and list(restarted.current_items()) == ["id-1"]
    assert restarted.add([item(3)]) == 2
    lines = (tmp_path / JOURNAL).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["id-1", "id-3"]
    assert list(Catalogue(str(tmp_path)).current_items()) == ["id-1", "id-3"]


def test_a_corrupt_line_before_the_last_is_an_error_naming_the_line(tmp_path):
    cat = Catalogue(str(tmp_path))
    cat.add([item(1), item(2)])
    lines = (tmp_path / JOURNAL).read_text().splitlines()
    (tmp_path / JOURNAL).write_text("not json\n" + lines[1] + "\n")
    with pytest.raises(CatalogueError, match=r"journal.jsonl: line 1"):
        Catalogue(str(tmp_path))


def test_concurrent_adds_from_threads_get_distinct_sequence_numbers(tmp_path):
    cat = Catalogue(str(tmp_path))
    seqs, errors = [], []

    def adder(t):
        try:
            for i in range(20):
                seqs.append(cat.add([item(f"{t}-{i}")]))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=adder, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(seqs) == list(range(1, 81))
    assert len(Catalogue(str(tmp_path)).current_items(read_images=False)) == 80


def _add_from_process(directory, name, count):
    cat = Catalogue(directory)
    for i in range(count):
        cat.add([item(f"{name}-{i}")])


def test_concurrent_adds_from_two_processes_interleave_whole(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_from_process, args=(str(tmp_path), n, 15))
             for n in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    cat = Catalogue(str(tmp_path))
    assert cat.last_seq == 30
    assert [op.seq for op in cat.ops_after(0)] == list(range(1, 31))
    assert len(cat.current_items()) == 30


def test_an_instance_sees_ops_another_instance_wrote(tmp_path):
    first, second = Catalogue(str(tmp_path)), Catalogue(str(tmp_path))
    first.add([item(1)])
    with pytest.raises(DuplicateIdError):
        second.add([item(1)])
    assert second.last_seq == 1 and [op.id for op in second.ops_after(0)] == ["id-1"]
