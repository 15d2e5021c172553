"""The lab training's held-out draws are the team's, not the job's: successive trainings of a
team compare on the same draws, and a draw reviewed later joins a side without moving others."""

from __future__ import annotations

import pytest

from patients.labmodel import TrainingError, split_by_draw


def _rows(draws: list[str]) -> list[dict]:
    return [{"draw": d, "file": f"{d}-{k}.tif"} for d in draws for k in range(3)]


def test_the_split_is_the_same_for_every_training_of_a_team_and_differs_between_teams() -> None:
    draws = [f"D{i}" for i in range(30)]
    first = split_by_draw(_rows(draws), salt="team-1")
    assert split_by_draw(_rows(list(reversed(draws))), salt="team-1") == first
    train, test = first
    assert not train & test and train | test == set(draws)
    assert 5 <= len(test) <= 15  # about a third
    assert split_by_draw(_rows(draws), salt="team-2") != first


def test_a_new_draw_does_not_move_the_others() -> None:
    draws = [f"D{i}" for i in range(20)]
    train, test = split_by_draw(_rows(draws), salt="team-1")
    train2, test2 = split_by_draw(_rows([*draws, "D-new"]), salt="team-1")
    assert train <= train2 and test <= test2 and (train2 | test2) - (train | test) == {"D-new"}


def test_both_sides_are_never_empty() -> None:
    for salt in ("a", "b", "c", "d", "e", "f"):
        train, test = split_by_draw(_rows(["X", "Y"]), salt=salt)
        assert len(train) == len(test) == 1
    with pytest.raises(TrainingError):
        split_by_draw(_rows(["X"]), salt="a")
