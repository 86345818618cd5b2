"""The one folder cache: built once, replaced only when complete, an incomplete one built again."""

from pathlib import Path

import pytest

from dltemplate.files import cached_folder


def test_a_folder_is_built_once_and_a_failed_build_leaves_nothing(tmp_path):
    builds = []

    def build(partial: Path) -> None:
        builds.append(partial)
        partial.mkdir()
        (partial / "data.bin").write_bytes(b"x")
        (partial / "done").write_text("")

    folder = tmp_path / "cache" / "thing"
    assert cached_folder(folder, build, "done", "things") == folder
    assert cached_folder(folder, build, "done", "things") == folder and len(builds) == 1
    assert (folder / "data.bin").read_bytes() == b"x" and not builds[0].exists()  # renamed into place

    def failing(partial: Path) -> None:
        partial.mkdir()
        (partial / "data.bin").write_bytes(b"half")
        raise OSError("disk full")

    other = tmp_path / "cache" / "other"
    with pytest.raises(OSError, match="disk full"):
        cached_folder(other, failing, "done", "things")
    assert not other.exists() and [p.name for p in other.parent.iterdir() if not p.name.endswith(".lock")] == ["thing"]


def test_a_folder_without_its_marker_is_built_again(tmp_path):
    folder = tmp_path / "thing"
    folder.mkdir()
    (folder / "data.bin").write_bytes(b"left by a killed run")

    def build(partial: Path) -> None:
        partial.mkdir()
        (partial / "data.bin").write_bytes(b"whole")
        (partial / "done").write_text("")

    cached_folder(folder, build, "done", "things")
    assert (folder / "data.bin").read_bytes() == b"whole"
