#!/usr/bin/env python3
"""Fits the rational approximation of the normal CDF used by GELU on the CPU (src/Kernels/Cpu/Simd.cs, NormalCdf).

    Φ(x) = 1/2 + z·P(z²)/Q(z²),  z = x/√2 clamped to ±C,  P of degree 5, Q of degree 5 with Q(0) = 1

erf(z)/2 is fitted on [0, C] by linearised least squares (z·P − g·Q, weighted by 1/Q of the previous pass), reweighted
towards the minimax error (Lawson). C = 3.92 is where erf rounds to 1 in float. Prints the float32 coefficients, the
fit's max error, and Φ's max error when evaluated in float32 with fused multiply-adds (simulated in double).
Needs numpy:  python3 tools/fit-normal-cdf.py
"""
import math
import numpy as np

C, NP, NQ = 3.92, 5, 5
erf = np.vectorize(math.erf)
z = np.concatenate([np.linspace(0, C, 30000), C * (1 - np.cos(np.linspace(0, np.pi / 2, 8000)))])
z.sort()
g = 0.5 * erf(z)
s = z * z

best, w = None, np.ones_like(z)
for _ in range(80):
    columns = [z * s**k for k in range(NP + 1)] + [-g * s**k for k in range(1, NQ + 1)]
    solution, *_ = np.linalg.lstsq(np.stack(columns, 1) * w[:, None], g * w, rcond=None)
    p, q = solution[: NP + 1], np.concatenate([[1.0], solution[NP + 1 :]])
    Q = sum(q[k] * s**k for k in range(NQ + 1))
    err = z * sum(p[k] * s**k for k in range(NP + 1)) / Q - g
    if best is None or np.abs(err).max() < best[0]:
        best = (np.abs(err).max(), p.copy(), q.copy())
    w = w * (0.5 + np.abs(err) / np.abs(err).max()) / np.abs(Q)
    w /= w.mean()
fit_error, p, q = best
p32, q32 = [np.float32(c) for c in p], [np.float32(c) for c in q]


def phi32(x):
    """Φ as Simd.NormalCdf computes it in float32 (each FMA rounded once)."""
    zz = np.clip((x.astype(np.float32) * np.float32(0.70710678118654752)).astype(np.float32), np.float32(-C), np.float32(C))
    ss = (zz * zz).astype(np.float32)
    P, Q = p32[-1], q32[-1]
    for c in p32[-2::-1]:
        P = (P.astype(np.float64) * ss + c).astype(np.float32)
    for c in q32[-2::-1]:
        Q = (Q.astype(np.float64) * ss + c).astype(np.float32)
    return np.clip((np.float32(0.5) + ((zz * P).astype(np.float32) / Q).astype(np.float32)).astype(np.float32), 0, 1)


x = np.linspace(-8, 8, 800001)
exact = 0.5 * (1 + erf(x / math.sqrt(2)))
print(f"fit max error on [0, {C}]: {fit_error:.3g}; Φ in float32: max error {np.abs(phi32(x) - exact).max():.3g}; "
      f"Φ(±{C * math.sqrt(2):.3f}) = {phi32(np.array([-C * math.sqrt(2)]))[0]}, {phi32(np.array([C * math.sqrt(2)]))[0]}")
print("P:", ", ".join(f"{float(c)!r}f" for c in p32))
print("Q:", ", ".join(f"{float(c)!r}f" for c in q32))
