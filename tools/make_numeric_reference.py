"""Reference values for helixlab's analysis numerics, from numpy and scikit-learn.

Writes one JSON file holding fixed input arrays and what numpy / scikit-learn compute on them:
PCA, least squares (including a rank-deficient helix basis), the Fourier spectrum of method.md
E2 (raw and detrended), the ridge mod-T probe, cosine similarity, and the whole helix fit of
method.md E3 (PCA, then least squares, then C = coef . components). The Rust tests in
crates/numeric, crates/spectral and crates/fit compare against this file; they never compute
their own expected values.

    python tools/make_numeric_reference.py crates/numeric/tests/fixtures/reference.json
"""

import json
import sys

import numpy as np
import sklearn
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

rng = np.random.default_rng(20250203)

# Numbers 0..59 in 12 dimensions: a helix with periods 10 and 3 plus a line, plus noise.
xs = np.arange(60, dtype=float)
basis_true = np.column_stack(
    [np.cos(2 * np.pi * xs / 10), np.sin(2 * np.pi * xs / 10),
     np.cos(2 * np.pi * xs / 3), np.sin(2 * np.pi * xs / 3), xs / xs.max(), np.ones_like(xs)]
)
X = basis_true @ rng.normal(size=(6, 12)) + 0.1 * rng.normal(size=(60, 12))

# PCA as sklearn computes it.
pca = PCA(n_components=5, svd_solver="full").fit(X)

# Least squares, numpy's default rcond, on the paper's helix basis (sin(2 pi x / 2) == 0).
def helix(x, periods, scale):
    cols = []
    for t in periods:
        cols += [np.cos(2 * np.pi * x / t), np.sin(2 * np.pi * x / t)]
    cols += [x / scale, np.ones_like(x)]
    return np.column_stack(cols)

paper = [2.0, 5.0, 10.0, 100.0]
A = helix(xs, paper, xs.max())
B = X[:, :3]
coef_lstsq = np.linalg.lstsq(A, B, rcond=None)[0]

# Spectrum: |FFT|^2 along the number axis of the centred (or detrended) columns, mean over dims.
Xc = X - X.mean(axis=0)
power_raw = (np.abs(np.fft.fft(Xc, axis=0)) ** 2).mean(axis=1)[: 60 // 2 + 1]
t = np.arange(60, dtype=float)
trend = np.polyfit(t, X, 1)  # (2, 12): slope, intercept
Xd = X - (np.outer(t, trend[0]) + trend[1])
power_detrended = (np.abs(np.fft.fft(Xd, axis=0)) ** 2).mean(axis=1)[: 60 // 2 + 1]

# The mod-T probe: StandardScaler + RidgeClassifier(alpha=1) on a fixed split.
test_rows = sorted(rng.choice(60, size=18, replace=False).tolist())
train_rows = [i for i in range(60) if i not in test_rows]
probes = {}
for T in [2, 3, 5, 10]:
    y = (xs.astype(int) % T)
    clf = make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0)).fit(X[train_rows], y[train_rows])
    probes[str(T)] = {
        "predictions": clf.predict(X[test_rows]).tolist(),
        "accuracy": float((clf.predict(X[test_rows]) == y[test_rows]).mean()),
    }

# Cosine similarity between numbers.
norms = np.linalg.norm(X, axis=1)
cosine = (X @ X.T) / np.outer(norms, norms)

# The helix fit of method.md E3 with PCA to 8 components.
fit_pca = PCA(n_components=8, svd_solver="full").fit(X)
Z = fit_pca.transform(X)
coef = np.linalg.lstsq(A, Z, rcond=None)[0]
C = coef @ fit_pca.components_
pred = A @ C + fit_pca.mean_
r2 = 1 - ((X - pred) ** 2).sum() / ((X - X.mean(axis=0)) ** 2).sum()

out = {
    "generator": f"tools/make_numeric_reference.py, numpy {np.__version__}, scikit-learn {sklearn.__version__}",
    "xs": xs.tolist(),
    "X": X.tolist(),
    "pca": {
        "k": 5,
        "mean": pca.mean_.tolist(),
        "components": pca.components_.tolist(),
        "explained_variance": pca.explained_variance_.tolist(),
        "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
    },
    "lstsq": {"periods": paper, "scale": float(xs.max()), "A": A.tolist(), "B": B.tolist(), "coef": coef_lstsq.tolist()},
    "spectrum": {"raw": power_raw.tolist(), "detrended": power_detrended.tolist()},
    "probe": {"alpha": 1.0, "train_rows": train_rows, "test_rows": test_rows, "by_period": probes},
    "cosine_first_rows": cosine[:3].tolist(),
    "helix_fit": {"pca_dim": 8, "C": C.tolist(), "prediction_row_7": pred[7].tolist(), "r2": float(r2)},
}
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
    f.write("\n")
print(f"wrote {sys.argv[1]}: helix fit R^2 {r2:.6f}")
