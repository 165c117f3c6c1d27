"""Atomic writes: all-or-nothing, and the written file has normal (umask) permissions, not mkstemp's 0600."""

import os
import stat

import pytest

from ldlm.storage.io import atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_file_with_umask_permissions(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": 2})
    assert path.read_text() == '{\n  "b": 2\n}\n'
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temporary left behind


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")

    with pytest.raises(TypeError):
        atomic_write_text(path, object())  # not a str: the write fails
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_directory_lock_excludes_a_second_holder_until_released(tmp_path):
    import threading

    from ldlm.storage.io import directory_lock

    got = threading.Event()

    def second():
        with directory_lock(tmp_path):
            got.set()

    with directory_lock(tmp_path):
        t = threading.Thread(target=second)
        t.start()
        assert not got.wait(0.3)  # blocked while the first holder keeps the lock
    assert got.wait(5)
    t.join()


def test_concurrent_markdown_blocks_lose_no_table(tmp_path):
    """Two `ldlm ablate` jobs of different tables rewrite the same page: every table's block must survive."""
    from concurrent.futures import ThreadPoolExecutor

    from ldlm.apps.ablation.table import write_markdown_block

    page = tmp_path / "results.md"
    tables = [f"t{i}" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda t: [write_markdown_block(page, t, f"block {t} {k}") for k in range(20)], tables))
    text = page.read_text()
    assert all(f"block {t} 19" in text for t in tables)
