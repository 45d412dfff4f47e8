#!/usr/bin/env python3
"""Independent reference values for serin::analysis::sequential.

Writes operator/tests/fixtures/sequential/reference.json, which
operator/tests/sequential_reference.rs compares with the Rust implementation.

Regenerate (from the repository root):

    pip install scipy          # numpy and scipy; tested with scipy 1.17
    python3 operator/tests/sequential_reference.py

and commit the JSON. The Rust test reads the JSON only; CI does not need Python.

What is computed here, and how it differs from the Rust code:

* Two-sample failure test (Lindon & Malek 2022). For each batch, conditioned on its failures,
  a failure is the canary's with probability theta(lambda) = rho*lambda / (rho*lambda + 1 - rho),
  rho = canary_requests / (canary_requests + primary_requests). The log-likelihood ratio
  against lambda = 1 is summed batch by batch (no share bins, no merging) in the theta
  parametrisation with scipy.special.xlogy / xlog1py, and checked against
  scipy.stats.binom.logpmf for integer counts. The Rust code works per share bin in the
  lambda parametrisation, ln L = C ln(lambda) - sum F_b ln(1 - rho_b + rho_b lambda).
* The prior is Serin's documented discrete prior: a normal N(0, tau^2) on t = ln(lambda),
  discretised at t_k = k*tau/20 for |k| <= 120; the test's one-sided prior keeps k >= 0 with
  half weight at k = 0 (the trapezoid rule for the half-normal). The e-value is a sum over
  that prior (scipy.special.logsumexp). As a check of the discretisation, the e-value under
  the continuous half-normal prior truncated to [0, 6 tau] is also computed with
  scipy.integrate.quad; the Rust test asserts the two agree to 0.01 in log.
* The confidence sequence is {lambda : ln L(lambda) > ln m + ln(alpha)}, m the two-sided
  mixture over the same grid; its ends are found with scipy.optimize.brentq (bisection in
  Rust). Ends beyond |ln lambda| = 50 are reported unbounded (0 or null), as in Rust.
* Wald's SPRT: thresholds, Kullback-Leibler divergences (scipy.special.rel_entr), Wald's
  expected sample sizes, log-likelihood ratios, and the exact fixed-sample binomial size from
  scipy.stats.binom.sf (the Rust code walks the probability mass function).
"""

import json
import math
import os
import sys

import numpy as np
import scipy
from scipy import integrate, optimize, special, stats

POINTS_PER_SCALE = 20
SCALES = 6
SEARCH_LIMIT = 50.0
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "sequential", "reference.json")


# --------------------------------------------------------------------------------------------
# Two-sample failure test
# --------------------------------------------------------------------------------------------


def share(b):
    total = b[0] + b[2]
    return None if total <= 0 else b[0] / total


def log_lr(batches, t):
    """ln L(e^t)/L(1), batch by batch, theta parametrisation."""
    total = 0.0
    for b in batches:
        rho = share(b)
        if rho is None:
            continue
        c, p = b[1], b[3]
        # theta = rho e^t / (rho e^t + 1 - rho), in logs
        log_den = np.logaddexp(math.log(rho) + t if rho > 0 else -np.inf, math.log1p(-rho) if rho < 1 else -np.inf)
        log_theta = (math.log(rho) + t - log_den) if rho > 0 else -np.inf
        log_1m_theta = (math.log1p(-rho) - log_den) if rho < 1 else -np.inf
        total += (c * log_theta if c > 0 else 0.0) + (p * log_1m_theta if p > 0 else 0.0)
        total -= special.xlogy(c, rho) + special.xlog1py(p, -rho)
    return float(total)


def log_lr_binom(batches, t):
    """The same from scipy.stats.binom, for integer counts."""
    total = 0.0
    for b in batches:
        rho = share(b)
        if rho is None:
            continue
        c, f = int(b[1]), int(b[1] + b[3])
        theta = rho * math.exp(t) / (rho * math.exp(t) + 1 - rho)
        total += stats.binom.logpmf(c, f, theta) - stats.binom.logpmf(c, f, rho)
    return float(total)


def prior(scale):
    k = POINTS_PER_SCALE * SCALES
    z = np.arange(-k, k + 1) / POINTS_PER_SCALE
    t = z * scale
    log_density = -0.5 * z * z
    log_w_two = log_density - special.logsumexp(log_density)
    half = log_density[k:].copy()
    half[0] += math.log(0.5)
    log_w_one = half - special.logsumexp(half)
    return t, log_w_two, t[k:], log_w_one


def score(batches, t):
    """d/dt ln L: canary failures minus their expectation."""
    total = 0.0
    for b in batches:
        rho = share(b)
        if rho is None:
            continue
        theta = special.expit(special.logit(rho) + t) if 0 < rho < 1 else rho
        total += b[1] - (b[1] + b[3]) * theta
    return total


def error_case(name, batches, alpha=0.05, margin=1.5, prior_scale=1.0, merged=False):
    t, log_w_two, t_one, log_w_one = prior(prior_scale)
    ll_two = np.array([log_lr(batches, x) for x in t])
    k = POINTS_PER_SCALE * SCALES
    log_e = float(special.logsumexp(log_w_one + ll_two[k:]))
    integer = all(float(v).is_integer() for b in batches for v in b)
    if integer:
        for x in (-3.0, -0.5, 0.7, 2.0):
            assert abs(log_lr(batches, x) - log_lr_binom(batches, x)) < 1e-8 * (1 + abs(log_lr(batches, x)))

    # Continuous half-normal prior on [0, 6 tau], for the discretisation check.
    def integrand(x):
        return math.exp(log_lr(batches, x) - log_e) * stats.norm.pdf(x, scale=prior_scale)

    upper_t = SCALES * prior_scale
    mass = stats.norm.cdf(upper_t, scale=prior_scale) - 0.5
    peak_hint = [p for p in np.linspace(0, upper_t, 13)[1:-1]]
    value, _ = integrate.quad(integrand, 0.0, upper_t, points=peak_hint, limit=500, epsabs=0, epsrel=1e-12)
    log_e_continuous = log_e + math.log(value / mass)

    level = float(special.logsumexp(log_w_two + ll_two)) + math.log(alpha)
    c_total = sum(b[1] for b in batches if share(b) is not None and 0 < share(b) < 1 and b[1] + b[3] > 0)
    p_total = sum(b[3] for b in batches if share(b) is not None and 0 < share(b) < 1 and b[1] + b[3] > 0)
    f = lambda x: log_lr(batches, x) - level  # noqa: E731
    if c_total + p_total == 0:
        estimate, peak = None, 0.0
    elif p_total == 0:
        estimate, peak = None, SEARCH_LIMIT
    elif c_total == 0:
        estimate, peak = 0.0, -SEARCH_LIMIT
    else:
        peak = optimize.brentq(lambda x: score(batches, x), -SEARCH_LIMIT, SEARCH_LIMIT, xtol=1e-14, rtol=1e-15)
        estimate = math.exp(peak)
    if f(-SEARCH_LIMIT) > 0:
        lower = 0.0
    else:
        lower = math.exp(optimize.brentq(f, -SEARCH_LIMIT, peak, xtol=1e-14, rtol=1e-15))
    if f(SEARCH_LIMIT) > 0:
        upper = None
    else:
        upper = math.exp(optimize.brentq(f, peak, SEARCH_LIMIT, xtol=1e-14, rtol=1e-15))

    threshold = -math.log(alpha)
    assert abs(log_e - threshold) > 1e-6, f"{name}: e-value too close to the threshold for a stable verdict"
    if upper is not None:
        assert abs(upper - margin) > 1e-6 * margin, f"{name}: upper bound too close to the margin"
    if log_e >= threshold:
        verdict = "Regression"
    elif upper is not None and upper < margin:
        verdict = "NoRegression"
    else:
        verdict = "Continue"
    return {
        "name": name,
        "merged": merged,
        "config": {"alpha": alpha, "margin": margin, "priorScale": prior_scale},
        "batches": [list(map(float, b)) for b in batches],
        "logEValue": log_e,
        "logEValueContinuousPrior": log_e_continuous,
        "ratioEstimate": estimate,
        "ratioLower": lower,
        "ratioUpper": upper,
        "verdict": verdict,
    }


def error_cases():
    rng = np.random.default_rng(20240611)
    steps = [0.1, 0.2, 0.3, 0.5]
    mixed = []
    for w in steps:
        n_c, n_p = 2000 * w, 2000 * (1 - w)
        mixed.append([n_c, float(rng.binomial(int(n_c), 0.006)), n_p, float(rng.binomial(int(n_p), 0.004))])
    jittered = []
    for i in range(40):
        w = [0.1, 0.2, 0.3, 0.4][i // 10] + rng.uniform(-0.01, 0.01)
        n_c = round(5000 * w)
        n_p = 5000 - n_c
        jittered.append([float(n_c), float(rng.binomial(n_c, 0.012)), float(n_p), float(rng.binomial(n_p, 0.01))])
    return [
        error_case("one window, 10 % share", [[100, 3, 900, 7]]),
        error_case("four steps, mildly worse canary", mixed),
        error_case("fractional counts", [[100.5, 2.25, 900.25, 3.5], [210.75, 4.5, 790.125, 6.25]]),
        error_case("no failures", [[1000, 0, 9000, 0], [2000, 0, 8000, 0]]),
        error_case("every failure on the canary", [[100, 1, 900, 0]] * 4),
        error_case("every failure on the primary", [[5000, 0, 5000, 40]]),
        error_case("one side without traffic", [[0, 0, 500, 20], [300, 5, 700, 9]]),
        error_case("ten times worse", [[200, 2, 1800, 2], [200, 3, 1800, 1]]),
        error_case("healthy, many failures", [[2000, 40, 8000, 160], [3000, 55, 7000, 141]], margin=2.0),
        error_case("strict alpha, narrow prior", [[1000, 25, 9000, 120]], alpha=0.01, margin=2.0, prior_scale=0.5),
        error_case("wide prior", [[1000, 25, 9000, 120], [2000, 30, 8000, 90]], alpha=0.1, prior_scale=2.5),
        error_case("tiny and huge shares", [[10, 1, 9990, 20], [9990, 30, 10, 0], [9000, 20, 1000, 3]]),
        error_case("small regression, strong evidence", [[50000, 6000, 50000, 5000]], margin=3.0),
        error_case("forty jittered windows, merged in Rust", jittered, merged=True),
    ]


# --------------------------------------------------------------------------------------------
# Wald SPRT
# --------------------------------------------------------------------------------------------


def fixed_sample_size(p0, p1, alpha, beta, max_n):
    for n in range(1, max_n + 1):
        c = int(stats.binom.isf(alpha, n, p0)) + 1  # smallest c with P0(X >= c) <= alpha
        while c > 0 and stats.binom.sf(c - 2, n, p0) <= alpha:
            c -= 1
        while stats.binom.sf(c - 1, n, p0) > alpha:
            c += 1
        if c <= n and stats.binom.sf(c - 1, n, p1) >= 1 - beta:
            return n
    return None


def sprt_case(p0, p1, alpha, beta, samples, max_n=20000):
    a = math.log((1 - beta) / alpha)
    b = math.log(beta / (1 - alpha))
    kl10 = float(special.rel_entr(p1, p0) + special.rel_entr(1 - p1, 1 - p0))
    kl01 = float(special.rel_entr(p0, p1) + special.rel_entr(1 - p0, 1 - p1))
    llrs = []
    for n, x in samples:
        llr = float(stats.binom.logpmf(x, n, p1) - stats.binom.logpmf(x, n, p0)) if float(x).is_integer() and float(n).is_integer() else None
        direct = float(special.xlogy(x, p1) - special.xlogy(x, p0) + special.xlog1py(n - x, -p1) - special.xlog1py(n - x, -p0))
        if llr is not None:
            assert abs(llr - direct) < 1e-9 * (1 + abs(direct))
        llrs.append({"requests": float(n), "failures": float(x), "logLikelihoodRatio": direct})
    return {
        "p0": p0,
        "p1": p1,
        "alpha": alpha,
        "beta": beta,
        "upperThreshold": a,
        "lowerThreshold": b,
        "klH1H0": kl10,
        "klH0H1": kl01,
        "expectedSampleSizeH1": ((1 - beta) * a + beta * b) / kl10,
        "expectedSampleSizeH0": (alpha * a + (1 - alpha) * b) / -kl01,
        "fixedSampleSize": fixed_sample_size(p0, p1, alpha, beta, max_n),
        "fixedSampleSizeLimit": max_n,
        "llr": llrs,
    }


def sprt_cases():
    samples = [(1, 0), (1, 1), (188, 2), (1000.5, 3.25), (0, 0)]
    return [
        sprt_case(0.001, 0.01, 0.05, 0.05, samples),
        sprt_case(0.01, 0.02, 0.05, 0.1, samples),
        sprt_case(0.05, 0.1, 0.01, 0.2, samples),
        sprt_case(0.001, 0.002, 0.05, 0.05, samples, max_n=20),
    ]


def main():
    data = {
        "generator": "operator/tests/sequential_reference.py",
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__},
        "prior": {"pointsPerScale": POINTS_PER_SCALE, "scales": SCALES},
        "errorCases": error_cases(),
        "sprtCases": sprt_cases(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as out:
        json.dump(data, out, indent=1)
        out.write("\n")
    for case in data["errorCases"]:
        print(
            f"{case['name']:42} lnE={case['logEValue']:9.4f} (cont {case['logEValueContinuousPrior']:9.4f}) "
            f"ratio={case['ratioEstimate']} [{case['ratioLower']:.4g}, {case['ratioUpper']}] {case['verdict']}"
        )
    for case in data["sprtCases"]:
        print(
            f"SPRT p0={case['p0']} p1={case['p1']}: A={case['upperThreshold']:.4f} B={case['lowerThreshold']:.4f} "
            f"E1={case['expectedSampleSizeH1']:.1f} E0={case['expectedSampleSizeH0']:.1f} n={case['fixedSampleSize']}"
        )


if __name__ == "__main__":
    main()
