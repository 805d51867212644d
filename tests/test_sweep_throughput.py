"""The projection model of ``experiments/sweep_throughput.py`` (what the README's "projected full
study" rests on), against totals worked out by hand from its documented rules: a trial pays a new
bucket's fixed cost the first time its (cell, padded width) comes up, the width-below cost the
first time its own width does in a compiled bucket, a held width's cost after that; a worker that
no longer holds the programs (evicted, or the worker replaced) pays the store's cost instead;
epochs are added at a time interpolated log-log between the measured widths."""

import math

import pytest

from conftest import experiment_script

EPOCHS = 2
#: the same at both measured widths, so that the interpolation returns these numbers
FLAT = {"epoch_s": 1.0, "fixed_cost_per_trial_s": 0.1, "fixed_cost_new_width_s": 5.0,
        "fixed_cost_width_below_s": 0.3, "fixed_cost_cached_programs_s": 0.4}
PER_WIDTH = {"20": dict(FLAT), "200": dict(FLAT)}
NEW, HELD, BELOW, STORE = 5.0 + EPOCHS, 0.1 + EPOCHS, 0.3 + EPOCHS, 0.4 + EPOCHS


@pytest.fixture(scope="module")
def st():
    return experiment_script("sweep_throughput")


def test_padded_widths(st):
    assert [st.padded(w, 8) for w in (1, 8, 9, 20, 200)] == [8, 8, 16, 24, 200]
    assert st.padded(37, 1) == 37


def test_one_worker_pays_each_bucket_once(st):
    trials = [("a", 20), ("a", 20), ("a", 21), ("b", 20), ("a", 30)]
    # (a, 24) new; 20 again, held; 21 in the held bucket (a, 24); (b, 24) new; (a, 32) new
    expected = NEW + HELD + BELOW + NEW + NEW
    assert st.worker_s(PER_WIDTH, trials, EPOCHS, multiple=8) == pytest.approx(expected)
    # unpadded, 21 and 20 are separate programs: 21 is a new bucket of its own
    assert st.worker_s(PER_WIDTH, trials, EPOCHS, multiple=1) == pytest.approx(
        NEW + HELD + NEW + NEW + NEW)


def test_trials_dealt_in_turn_pay_the_store_where_their_worker_lacks_the_program(st):
    trials = [("a", 20), ("a", 20), ("a", 21), ("b", 20), ("a", 22)]
    # worker 0 takes trials 0, 2, 4 and worker 1 trials 1, 3: trial 1 was compiled by worker 0
    # (store), trial 2 is in worker 0's bucket (held), trial 4 a new width of (a, 24), which
    # worker 0 holds: the width below; the same on worker 1 would add store - held
    expected = NEW + STORE + BELOW + NEW + BELOW
    assert st.worker_s(PER_WIDTH, trials, EPOCHS, multiple=8, workers=2) == pytest.approx(expected)
    swapped = [("a", 20), ("a", 20), ("b", 20), ("a", 21)]
    # trial 3 (worker 1, which ran (a, 24) from the store at trial 1): held
    assert st.worker_s(PER_WIDTH, swapped, EPOCHS, multiple=8, workers=2) == pytest.approx(
        NEW + STORE + NEW + BELOW)
    first_on_other = [("a", 20), ("a", 21)]
    # trial 1 on worker 1, its bucket compiled by worker 0: the width below plus what loading
    # from the store costs over holding
    assert st.worker_s(PER_WIDTH, first_on_other, EPOCHS, multiple=8, workers=2) == pytest.approx(
        NEW + BELOW + (0.4 - 0.1))


def test_programs_dropped_by_a_full_worker_or_a_replaced_one_come_from_the_store(st, monkeypatch):
    from lstm_research.sweeps.workers import WorkerOptions
    from lstm_research.training import loop
    monkeypatch.setattr(loop, "STEPS_KEPT", 1)  # holds one program: (b, 24) evicts (a, 24)
    assert st.worker_s(PER_WIDTH, [("a", 20), ("b", 20), ("a", 20)], EPOCHS, multiple=8) == \
        pytest.approx(NEW + NEW + STORE)
    monkeypatch.setattr(loop, "STEPS_KEPT", 64)
    monkeypatch.setattr(WorkerOptions, "max_trials", 2)  # the third trial runs in a new worker
    assert st.worker_s(PER_WIDTH, [("a", 20)] * 4, EPOCHS, multiple=8) == pytest.approx(
        NEW + HELD + STORE + HELD)


def test_runs_that_did_not_measure_the_store_assume_memory(st):
    old = {w: {k: v for k, v in r.items() if k != "fixed_cost_cached_programs_s"}
           for w, r in PER_WIDTH.items()}
    assert st.worker_s(old, [("a", 20), ("a", 20)], EPOCHS, multiple=8, workers=2) == \
        pytest.approx(NEW + HELD)


def test_times_between_measured_widths_are_interpolated_log_log(st):
    per_width = {"20": dict(FLAT, epoch_s=1.0), "200": dict(FLAT, epoch_s=10.0)}
    w = round(math.sqrt(20 * 200))  # 63: log-midway, so the epoch is about sqrt(1 * 10)
    expected = 5.0 + 3 * 10 ** (math.log(w / 20) / math.log(10))
    assert st.worker_s(per_width, [("a", w)], 3) == pytest.approx(expected)
    # beyond the measured widths the end values hold (numpy.interp)
    assert st.worker_s(per_width, [("a", 300)], 3) == pytest.approx(5.0 + 3 * 10.0)
