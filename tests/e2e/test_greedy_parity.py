"""The comparison the engine tests rest on, checked on made-up runs: a router flip at one position is allowed
where asked for, a shift at every position (a wrong shard or scale) never is."""

import pytest

from greedy_parity import ROUTER_FLIP_LIMIT, assert_same_within_noise

TOKENS = list(range(16))


def _run(shift_at: dict[int, float] | None = None) -> dict:
    shift_at = shift_at or {}
    logits = [{str(t): 20.0 + shift_at.get(i, 0.0), "99": 8.0} for i, t in enumerate(TOKENS)]
    return {"tokens": [TOKENS], "logits": [logits]}


def _compare(got: dict, router_flips: float = 0.0) -> float:
    return assert_same_within_noise(_run(), got, str, "made up", 1.0, router_flips=router_flips)


def test_rounding_noise_passes_and_is_returned():
    assert _compare(_run({3: 0.25, 9: -0.125})) == 0.25


def test_one_isolated_flip_passes_only_when_allowed():
    with pytest.raises(AssertionError, match="1 of 16 positions"):
        _compare(_run({2: 1.44}))
    assert _compare(_run({2: 1.5}), router_flips=1 / 16) == 1.5


def test_more_flips_than_allowed_or_a_flip_past_the_bound_fail():
    with pytest.raises(AssertionError, match="2 of 16 positions"):
        _compare(_run({2: 1.44, 7: 1.5}), router_flips=1 / 16)
    with pytest.raises(AssertionError):
        _compare(_run({2: ROUTER_FLIP_LIMIT + 0.5}), router_flips=1 / 16)


def test_a_shift_at_every_position_fails():
    with pytest.raises(AssertionError, match="16 of 16 positions"):
        _compare(_run(dict.fromkeys(range(16), 1.5)), router_flips=1 / 16)
