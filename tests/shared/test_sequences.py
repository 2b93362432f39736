"""HighestSequences: an output line is new once per key, and only the newest keys are kept."""

from __future__ import annotations

from shared.sequences import HighestSequences


def test_a_sequence_is_new_once_and_only_above_the_highest() -> None:
    highs: HighestSequences[str] = HighestSequences(kept=10)
    assert [highs.is_new("a", s) for s in (0, 1, 1, 0, 3, 2)] == [True, True, False, False, True, False]
    assert highs.is_new("b", 0)  # per key
    highs.record("c", 5)  # what another source had (the stream's last_seq)
    assert "c" in highs and not highs.is_new("c", 5) and highs.is_new("c", 6)


def test_the_least_recently_seen_keys_are_forgotten() -> None:
    highs: HighestSequences[str] = HighestSequences(kept=2)
    highs.is_new("a", 3)
    highs.is_new("b", 3)
    highs.is_new("a", 4)  # "a" is the most recent now
    highs.is_new("c", 0)  # "b" goes
    assert "a" in highs and "c" in highs and "b" not in highs
    assert highs.is_new("b", 0)  # forgotten: new again (the hub reads Redis first for that)
