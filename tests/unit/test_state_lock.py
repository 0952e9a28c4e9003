"""The state directory lock: one holder at a time, naming its pid; released, it is free."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tradeguard.app import LOCK_FILE, StateDirError, StateDirLocked, StateLock


def test_one_holder_at_a_time_and_the_refusal_names_it(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    with StateLock(state) as first:
        assert (state / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        assert state.stat().st_mode & 0o777 == 0o700
        with pytest.raises(StateDirLocked) as refused:
            StateLock(state).acquire()
        assert refused.value.pid == os.getpid()
        assert f"in use by pid {os.getpid()}" in str(refused.value)
        assert first.holder() == os.getpid()
    with StateLock(state):  # released: free again, though the file stays
        pass
    assert not list(state.glob(".write-probe-*"))


def test_a_state_dir_that_cannot_exist_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StateDirError, match="cannot create it"):
        StateLock(tmp_path / "file" / "state").acquire()
