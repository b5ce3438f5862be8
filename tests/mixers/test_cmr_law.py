"""The CMR law (mixers/cmr_law.py): any power law in tokens and domain share is recovered from its
points, the critical ratio is the law's closed form within its bounds, points that did not forget
are left out, and the bootstrap interval holds the truth under noise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mixforge.errors import MixforgeError
from mixforge.mixers.cmr_law import critical_ratio_interval, fit_cmr

TOKENS = np.repeat([2_000.0, 4_000.0, 6_000.0, 8_000.0], 5)
RATIOS = np.tile([0.1, 0.2, 0.35, 0.5, 1.0], 4)


@settings(max_examples=60, deadline=None)
@given(k=st.floats(1e-4, 1.0), a=st.floats(-1.0, 2.0), b=st.floats(0.2, 4.0))
def test_any_power_law_is_recovered_from_its_points(k, a, b):
    law = fit_cmr(TOKENS, RATIOS, k * (TOKENS / 8_000) ** a * RATIOS ** b)
    assert law.k == pytest.approx(k, rel=1e-6) and law.a == pytest.approx(a, abs=1e-6) and law.b == pytest.approx(b, abs=1e-6)
    assert law.rmse_log < 1e-9 and law.points == 20
    # the critical ratio: k (T/unit)^a r^b = tolerance x reference, solved for r, then kept within the bounds
    closed = (0.01 * 3.0 / (k * (8_000 / 8_000) ** a)) ** (1 / b)
    assert law.critical_ratio(8_000, 3.0, 0.01) == pytest.approx(min(closed, 1.0), rel=1e-6)
    assert law.critical_ratio(8_000, 3.0, 0.01, lowest=0.3, highest=0.6) == pytest.approx(np.clip(closed, 0.3, 0.6), rel=1e-6)


def test_points_that_did_not_forget_are_left_out_and_too_few_is_an_error():
    f = 0.02 * (TOKENS / 8_000) ** 0.5 * RATIOS ** 1.5
    f[:6] = [0.0, -0.01, 0.0, -0.2, 0.0, 0.0]  # no forgetting measured there: no log
    law = fit_cmr(TOKENS, RATIOS, f)
    assert law.points == 14 and law.b == pytest.approx(1.5)
    with pytest.raises(MixforgeError, match="at least 3 measured points that forgot general text; 2 of 20 did"):
        fit_cmr(TOKENS, RATIOS, np.where(np.arange(20) < 2, 0.1, -0.1))


def test_the_bootstrap_interval_holds_the_true_critical_ratio_under_noise():
    rng = np.random.default_rng(0)
    truth = 0.03 * (TOKENS / 8_000) ** 0.8 * RATIOS ** 1.2
    noisy = truth * np.exp(rng.normal(0, 0.05, len(truth)))
    r_true = (0.01 * 2.5 / 0.03) ** (1 / 1.2)
    law = fit_cmr(TOKENS, RATIOS, noisy)
    interval = critical_ratio_interval(TOKENS, RATIOS, noisy, 8_000, 2.5, 0.01, 0.0, 1.0, seed=0, resamples=300)
    assert interval["low"] <= r_true <= interval["high"] and interval["resamples"] == 300
    assert interval["low"] <= law.critical_ratio(8_000, 2.5, 0.01) <= interval["high"]
    assert interval["high"] - interval["low"] < 0.2
