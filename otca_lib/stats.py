"""Statistics of results over seeds: confidence intervals of a mean and paired tests, from Student's t.

Runs of a study use the same seeds for every method (paired: seed s of method A and of `grpo` share the prompts,
the initial noise of the first rollout and the base model's evaluation), so a method is compared with the
baseline through the per-seed differences d_s = x_s(method) - x_s(baseline):

    mean d, 95 % CI  mean d +- t_{0.975, n-1} sd(d) / sqrt(n),  two-sided p = 2 P(T_{n-1} > |mean d| / (sd(d) / sqrt n))

Student's t distribution is computed here (no SciPy): its CDF through the regularised incomplete beta function,
evaluated by its continued fraction (modified Lentz), and quantiles by bisection on the CDF.
"""

from __future__ import annotations

import math


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), x in [0, 1]."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    if x > (a + 1) / (a + b + 2):  # the continued fraction converges fast on this side; use the symmetry otherwise
        return 1.0 - incomplete_beta(b, a, 1 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(400):  # modified Lentz on 1 / (1 + d1 / (1 + d2 / (1 + ...)))
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return front * (f - 1.0)


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, by bisection (to 1e-10)."""
    lo, hi = -1e4, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values, level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of its `level` confidence interval) of values over seeds; half-width NaN for n < 2."""
    v = [float(x) for x in values]
    n = len(v)
    mean = sum(v) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    return mean, t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)


def paired_test(values, baseline) -> dict:
    """Per-seed differences values - baseline (same seeds, same order): their mean, 95 % CI half-width, the
    two-sided p-value of 'no difference' (paired t-test) and n."""
    d = [float(x) - float(y) for x, y in zip(values, baseline, strict=True)]
    mean, half = mean_ci(d)
    n = len(d)
    if n < 2:
        return {"diff": mean, "ci95": float("nan"), "p": float("nan"), "n": n}
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    p = 1.0 if sd == 0 and mean == 0 else 0.0 if sd == 0 else 2 * (1 - t_cdf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return {"diff": mean, "ci95": half, "p": p, "n": n}
