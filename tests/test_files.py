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


def _no_tmpdir(*args, **kwargs):
    raise OSError(28, "No space left on device (a temporary file in $TMPDIR)")


def test_a_checkpoint_is_written_beside_its_target_and_renamed_never_through_tmpdir(tmp_path, monkeypatch):
    import os
    import tempfile

    import torch

    from dltemplate.checkpoint import AtomicCheckpointIO

    monkeypatch.setattr(tempfile, "mkstemp", _no_tmpdir)
    renames = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((Path(src), Path(dst))), replace(src, dst)))
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert [(src.parent, dst) for src, dst in renames] == [(target.parent, target)]
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_a_checkpoint_write_that_dies_midway_leaves_the_previous_last_ckpt(tmp_path, monkeypatch):
    import torch

    from dltemplate.checkpoint import AtomicCheckpointIO

    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)
    before = target.read_bytes()

    def dies_midway(obj, path):
        Path(path).write_bytes(before[: len(before) // 3])  # a third written, then the disk fills (or a kill)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, target)
    assert target.read_bytes() == before
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no partial file left


def test_training_writes_its_checkpoints_without_tmpdir(make_cfg, monkeypatch):
    import tempfile

    from dltemplate.checkpoint import AtomicCheckpointIO, load_checkpoint
    from dltemplate.train import train

    cfg = make_cfg("task=linear_regression", "debug=limit_batches", "trainer.max_epochs=2", "test=false")
    monkeypatch.setattr(tempfile, "mkstemp", _no_tmpdir)
    result = train(cfg)
    assert isinstance(result.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    checkpoints = Path(result.output_dir) / "checkpoints"
    assert load_checkpoint(checkpoints / "last.ckpt")["epoch"] == 1
    assert not list(checkpoints.glob(".*.part"))
