"""fastflow.autotune: the measured choice of 'auto' (the first call of a shape class times
the candidates; the reference stays unless another is at least 5% faster), its cache, the
switch that turns measuring off, and how decisions are shown."""

import time

import pytest
import torch

import fastflow
from fastflow import autotune


@pytest.fixture(autouse=True)
def fresh_decisions(monkeypatch):
    monkeypatch.delenv(autotune.ENV_VAR, raising=False)
    autotune.clear()
    yield
    autotune.clear()


def counting(seconds, counts, name):
    def call():
        counts[name] = counts.get(name, 0) + 1
        time.sleep(seconds)
    return call


def test_faster_candidate_is_picked_once_and_cached():
    counts = {}
    made = []

    def candidates():
        made.append(1)
        return {"torch": counting(0.003, counts, "torch"), "cpu": counting(0.0, counts, "cpu")}

    key = ("op", "cpu", torch.float32, 2, False, 16, 8)
    assert autotune.decide(key, candidates) == "cpu"
    calls = autotune.WARMUPS + autotune.REPEATS
    assert counts == {"torch": calls, "cpu": calls}
    assert autotune.decide(key, candidates) == "cpu"
    assert len(made) == 1 and counts["cpu"] == calls  # cached: nothing timed
    decision = autotune.decisions()[key]
    assert decision.choice == "cpu" and decision.seconds["torch"] >= 0.003
    assert str(decision).startswith("cpu (torch ")


def test_slower_candidate_is_never_picked():
    candidates = {"torch": counting(0.0, {}, "torch"), "cpu": counting(0.003, {}, "cpu")}
    assert autotune.decide(("op", 1), lambda: candidates) == "torch"
    assert autotune.decisions()[("op", 1)].choice == "torch"


def test_measuring_off_runs_the_reference(monkeypatch):
    monkeypatch.setenv(autotune.ENV_VAR, "0")
    counts = {}
    candidates = {"torch": counting(0.003, counts, "torch"), "cpu": counting(0.0, counts, "cpu")}
    assert not autotune.enabled()
    assert autotune.decide(("op", 2), lambda: candidates) == "torch"
    assert counts == {} and autotune.decisions() == {}
    assert "measured (off: FASTFLOW_AUTOTUNE=0): none yet" in str(fastflow.info())


@pytest.mark.parametrize("batch,bucket", [(0, 0), (1, 1), (2, 2), (3, 4), (16, 16), (17, 32)])
def test_shape_class_rounds_the_batch_up_to_a_power_of_2(batch, bucket):
    key = autotune.shape_class("op", torch.empty(batch, 3, dtype=torch.float64), 5, 3, grad=True)
    assert key == ("op", "cpu", torch.float64, torch.get_num_threads(), True, bucket, 5, 3)


def test_long_calls_are_timed_once(monkeypatch):
    """Large inputs: a warm-up call over LONG_CALL_S makes one timed call each, not REPEATS."""
    monkeypatch.setattr(autotune, "LONG_CALL_S", 0.001)
    counts = {}
    candidates = {"torch": counting(0.002, counts, "torch"), "cpu": counting(0.0, counts, "cpu")}
    assert autotune.decide(("op", 3), lambda: candidates) == "cpu"
    assert counts == {"torch": 2, "cpu": 2}


def test_close_candidates_are_timed_again():
    """A candidate within CLOSE of the reference's time gets CLOSE_REPEATS more rounds; a
    clear winner does not."""
    counts = {}
    candidates = {"torch": counting(0.002, counts, "torch"), "cpu": counting(0.0019, counts, "cpu")}
    autotune.decide(("op", "close"), lambda: candidates)
    assert counts == {name: autotune.WARMUPS + autotune.REPEATS + autotune.CLOSE_REPEATS
                      for name in candidates}
    counts.clear()
    candidates = {"torch": counting(0.004, counts, "torch"), "cpu": counting(0.0, counts, "cpu")}
    autotune.decide(("op", "clear"), lambda: candidates)
    assert counts == {name: autotune.WARMUPS + autotune.REPEATS for name in candidates}


def test_decided_by_the_ratio_within_rounds():
    """One lucky fast call of the reference does not decide: the candidate, twice as fast in
    every round but that one, wins by the median of its per-round time ratios (the fastest
    call of each would have kept the reference). The rounds alternate which call goes first."""
    order = []
    reference_calls = iter([0.004] * autotune.WARMUPS + [0.0] + [0.004] * 100)

    def reference():
        order.append("torch")
        time.sleep(next(reference_calls))

    def candidate():
        order.append("cpu")
        time.sleep(0.002)

    key = ("op", "lucky")
    assert autotune.decide(key, lambda: {"torch": reference, "cpu": candidate}) == "cpu"
    decision = autotune.decisions()[key]
    assert decision.seconds["torch"] < decision.seconds["cpu"]
    assert 0.4 < decision.ratios["cpu"] < 0.6 and "cpu 0.5" in str(decision)
    timed = order[2 * autotune.WARMUPS:]
    assert timed[:4] == ["torch", "cpu", "cpu", "torch"]
