"""facexai.writing: atomic replacement and refusing to overwrite inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from facexai.writing import OverwriteInputError, atomic_path, refuse_inputs, write_text_atomic


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_text("good")

    def crash_half_way() -> None:
        with atomic_path(target) as partial:
            partial.write_text("half")
            raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError, match="writer crashed"):
        crash_half_way()
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_successful_write_replaces_and_keeps_suffix(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.json"
    with atomic_path(target) as partial:
        assert partial.suffix == ".json"
        assert partial.parent == target.parent
        assert partial.name.startswith(".")
        partial.write_text("{}")
    assert target.read_text() == "{}"
    write_text_atomic(target, "[1]")
    assert target.read_text() == "[1]"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_writer_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    with pytest.raises(FileNotFoundError, match="no file"), atomic_path(target):
        pass
    assert not target.exists()


def test_refuse_inputs(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_text("x")
    src = tmp_path / "faces"
    src.mkdir()
    with pytest.raises(OverwriteInputError, match="--output"):
        refuse_inputs(tmp_path / "." / "model.ckpt", [ckpt], what="--output")
    with pytest.raises(OverwriteInputError):
        refuse_inputs(src, [src])
    with pytest.raises(OverwriteInputError):
        refuse_inputs(src / "aligned", [src])
    (tmp_path / "link.ckpt").symlink_to(ckpt)
    with pytest.raises(OverwriteInputError):
        refuse_inputs(tmp_path / "link.ckpt", [ckpt])
    refuse_inputs(tmp_path / "model.onnx", [ckpt, None, src])
