"""Which API key files the server accepts: none that another user may read, except a Secret that
Kubernetes hands to the pod's own group (root's file, mode 0440, group = the server's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vintage.errors import ServingError
from vintage.serving.auth import ApiKeys, _private

KEY = "k" * 40


def stat_of(mode: int, gid: int) -> os.stat_result:
    return os.stat_result((0o100000 | mode, 0, 0, 1, 0, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("mode", "own_group", "ok"),
    [
        (0o600, False, True),
        (0o400, False, True),
        (0o440, True, True),  # Kubernetes: root's file, group = the pod's
        (0o440, False, False),  # a group the server is not in
        (0o460, True, False),  # group may write
        (0o444, True, False),  # anyone may read
        (0o604, False, False),
        (0o640, False, False),
    ],
)
def test_private_key_files(mode: int, own_group: bool, ok: bool) -> None:
    gid = os.getegid() if own_group else os.getegid() + 1
    if own_group and gid == 0:
        # root's own group never counts: a 0440 file of group root is readable by every member of it
        assert _private(stat_of(mode, gid)) is (mode & 0o077 == 0)
        return
    assert _private(stat_of(mode, gid)) is ok


def test_a_group_readable_file_of_another_group_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(KEY + "\n")
    path.chmod(0o640)
    if os.getegid() != 0:
        assert ApiKeys.from_file(path).required  # the server's own group
    other = 12345 if os.getegid() != 12345 else 12346
    if os.geteuid() == 0:
        os.chown(path, -1, other)
        with pytest.raises(ServingError, match="readable by other users"):
            ApiKeys.from_file(path)
    path.chmod(0o644)
    with pytest.raises(ServingError, match="readable by other users"):
        ApiKeys.from_file(path)
