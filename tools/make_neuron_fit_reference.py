"""Reference values for helixlab's closed-form neuron fits (crates/attribute/src/neuron_fit.rs),
from numpy's least squares, independently of helixlab.

Three neurons over the 20 x 20 grid of (a, b): a planted sum of periodic terms in a, b, a+b
with a slope, plus seeded noise; one pure noise; one a+b-only. The design is the paper's:
per t in (a, b, a+b) the slope t / 100, then cos and sin of 2 pi t / T for T in 2, 5, 10, 100;
a bias last. numpy's lstsq (default rcond) gives the coefficients and the fitted values.

    python tools/make_neuron_fit_reference.py crates/attribute/tests/fixtures/neuron_fit_reference.json
"""

import json
import sys

import numpy as np

rng = np.random.default_rng(20250516)
PERIODS = [2.0, 5.0, 10.0, 100.0]
ab = [(a, b) for a in range(20) for b in range(20)]
A = np.array([a for a, _ in ab], float)
B = np.array([b for _, b in ab], float)
S = A + B
tau = 2 * np.pi

y = np.column_stack([
    4 * np.cos(tau * (S - 3) / 10) + 1.5 * np.cos(tau * (A - 2) / 5) - 0.8 * np.cos(tau * B / 2)
    + 0.02 * A + 0.3 + 0.05 * rng.normal(size=len(ab)),
    rng.normal(size=len(ab)),
    2 * np.sin(tau * S / 100) + 0.01 * rng.normal(size=len(ab)),
])

cols = []
for t in (A, B, S):
    cols.append(t / 100)
    for T in PERIODS:
        cols += [np.cos(tau * t / T), np.sin(tau * t / T)]
cols.append(np.ones_like(A))
X = np.column_stack(cols)
coef, *_ = np.linalg.lstsq(X, y, rcond=None)

with open(sys.argv[1], "w") as f:
    json.dump({
        "generator": f"tools/make_neuron_fit_reference.py, numpy {np.__version__}",
        "periods": PERIODS,
        "ab": ab,
        "y": y.T.tolist(),
        "coefficients": coef.T.tolist(),
        "fitted": (X @ coef).T.tolist(),
    }, f)
    f.write("\n")
print(f"wrote {sys.argv[1]}")
