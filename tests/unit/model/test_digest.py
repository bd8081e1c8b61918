"""The content digest of a model directory: every file counts, nothing but regular files is accepted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vintage.errors import ServingError
from vintage.model.digest import MANIFEST, compute, recorded, short, verify, write_manifest


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "m"
    (root / "sub").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "model.pkl").write_bytes(b"\x80\x05pickle")
    (root / "sub" / "input_example.json").write_text("{}")
    return root


def test_manifest_records_every_file_and_verifies(model):
    digest = write_manifest(model)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert recorded(model) == digest == compute(model) == verify(model) == verify(model, digest)
    assert short(digest) == digest[:19]


@pytest.mark.parametrize(
    "change",
    [
        lambda m: (m / "model.pkl").write_bytes(b"\x80\x05evil"),  # a file changed
        lambda m: (m / "extra.pkl").write_bytes(b"x"),  # a file added
        lambda m: (m / "sub" / "input_example.json").unlink(),  # a file removed
        lambda m: (m / "model.pkl").rename(m / "model2.pkl"),  # a file renamed
    ],
)
def test_any_change_after_materialisation_is_refused(model, change):
    digest = write_manifest(model)
    change(model)
    assert compute(model) != digest
    with pytest.raises(ServingError, match="differ from the digest recorded"):
        verify(model)


def test_wrong_expected_digest_and_missing_manifest(model, tmp_path):
    write_manifest(model)
    other = tmp_path / "other"
    other.mkdir()
    (other / "MLmodel").write_text("x")
    with pytest.raises(ServingError, match="not the requested"):
        verify(model, write_manifest(other))
    (model / MANIFEST).unlink()
    assert recorded(model) is None
    with pytest.raises(ServingError, match="no content manifest"):
        verify(model)
    (model / MANIFEST).write_text("{not json")
    assert recorded(model) is None


def test_symlinks_and_special_files_are_refused(model, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    (model / "link.pkl").symlink_to(outside)
    with pytest.raises(ServingError, match="not a regular file"):
        compute(model)
    (model / "link.pkl").unlink()
    (model / "dirlink").symlink_to(tmp_path)
    with pytest.raises(ServingError, match="symlink"):
        compute(model)
    (model / "dirlink").unlink()
    os.mkfifo(model / "fifo")
    with pytest.raises(ServingError, match="not a regular file"):
        compute(model)


def test_empty_or_missing_directory_has_no_digest(tmp_path):
    with pytest.raises(ServingError, match="empty or missing"):
        compute(tmp_path / "nope")
