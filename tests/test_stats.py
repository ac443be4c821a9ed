"""Student's t, confidence intervals and the paired test (otca_lib/stats.py) against tabulated values."""
import math

import pytest

from otca_lib.stats import incomplete_beta, mean_ci, paired_test, t_cdf, t_quantile


@pytest.mark.parametrize("df,q", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)])
def test_t_quantiles_match_the_tables(df, q):
    assert abs(t_quantile(0.975, df) - q) < 1e-4
    assert abs(t_cdf(q, df) - 0.975) < 1e-5 and abs(t_cdf(-q, df) - 0.025) < 1e-5


def test_closed_forms():
    assert t_cdf(0.0, 3) == 0.5
    assert abs(t_cdf(1.0, 1) - 0.75) < 1e-12                   # Cauchy: 1/2 + atan(t) / pi
    assert abs(incomplete_beta(1, 1, 0.3) - 0.3) < 1e-12       # uniform
    assert abs(incomplete_beta(2, 3, 0.4) - 0.5248) < 1e-12    # 1 - sum_{j<2} C(4, j) 0.4^j 0.6^(4-j)


def test_mean_ci_and_paired_test():
    mean, half = mean_ci([1.0, 2.0, 3.0])                       # sd 1, n 3: 4.3027 / sqrt(3)
    assert mean == 2.0 and abs(half - 4.302653 / math.sqrt(3)) < 1e-5
    r = paired_test([1.1, 2.2, 3.3, 4.1], [1.0, 2.0, 3.0, 4.0])  # differences 0.1, 0.2, 0.3, 0.1
    assert abs(r["diff"] - 0.175) < 1e-12 and r["n"] == 4
    t = 0.175 / (math.sqrt(sum((x - 0.175) ** 2 for x in (0.1, 0.2, 0.3, 0.1)) / 3) / 2)
    assert abs(r["p"] - 2 * (1 - t_cdf(t, 3))) < 1e-12 and 0.01 < r["p"] < 0.05
    assert paired_test([1.0, 2.0], [1.0, 2.0])["p"] == 1.0     # identical runs: no difference
    with pytest.raises(ValueError):
        paired_test([1.0, 2.0], [1.0])                          # unpaired seeds are an error
