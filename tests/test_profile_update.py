"""``experiments/profile_update.py``: the HLO of a compiled Greff JSB train-steps program names
every part of the update it reports (JAX's name stack: ``jvp(...)`` forward, ``transpose(...)``
backward, the model's modules), so a renaming in JAX or in the model shows here."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import profile_update  # noqa: E402

PARTS = [p for p, _ in profile_update.PARTS]


def test_names_of_the_parts():
    assert profile_update.part_of("jit(train_steps)/while/body/transpose(jvp(PerStep))/rnn/while") \
        == "backward loop"
    assert profile_update.part_of("jit(train_steps)/while/body/jvp(PerStep)/rnn/while") == \
        "forward loop"
    assert profile_update.part_of("jit(train_steps)/while/body/jvp(PerStep)/head/dot_general") \
        == "head"
    assert profile_update.part_of("jit(train_steps)/while/body/square") == "other"


def test_a_profiled_epoch_finds_every_part_of_the_update():
    data = Path(os.environ["LSTM_RESEARCH_DATA"]) / "jsb_chorales"
    if not data.is_dir():
        pytest.skip(f"real JSB data not found at {data}")
    r = profile_update.profile_epoch(8)
    assert r["updates"] == 229  # one update per training sequence
    parts = r["parts_us_per_update"]
    assert [p for p in PARTS if not parts.get(p, 0) > 0] == []
    # what no part claims stays a minority of the timed operations
    assert parts.get("other", 0) < 0.5 * sum(parts.values())
