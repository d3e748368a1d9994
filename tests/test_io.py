"""capsearch.io: atomic writes (nothing half-written, modes as a normal file gets)."""

import pytest

from capsearch.io import atomic_path, atomic_paths, write_json


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_outputs_get_the_mode_of_a_normal_file(tmp_path, umask):
    import os

    import numpy as np
    from PIL import Image

    from capsearch.contact_sheet import save_png
    from capsearch.io import save_npy, write_csv

    previous = os.umask(umask)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
        write_csv(tmp_path / "t.csv", ["a"], [[1]])
        save_npy(tmp_path / "v.npy", np.zeros(3))
        save_png(Image.new("RGB", (4, 4)), tmp_path / "p.png")
        (tmp_path / "plain.txt").write_text("x")  # what open() gives, for comparison
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()}
    assert modes == dict.fromkeys(("m.json", "t.csv", "v.npy", "p.png", "plain.txt"), 0o666 & ~umask)


def test_files_that_belong_together_are_replaced_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("old a")
    with pytest.raises(UnicodeEncodeError), atomic_paths(a, b) as (new_a, new_b):
        new_a.write_text("new a")
        new_b.write_text("\ud800", encoding="utf-8")  # the second file fails midway
    assert a.read_text() == "old a" and not b.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
    with atomic_paths(a, b) as (new_a, new_b):
        new_a.write_text("new a")
        new_b.write_text("new b")
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]
