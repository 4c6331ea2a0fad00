"""NumPy peer of the Monte Carlo part of the `uncertainty` study, as run by
`cargo run --release -p dtop-studies --example bench_kinds -- uncertainty`: Cristallo's msd3
chain, 5 % on all 9 parameters, force at floor 3, 1000 frequencies over 5-200 rad/s, 10^5
samples uniform in the box; per (frequency, floor) min, max, sum of |u| and a 64-bin histogram
of log10(|u|/|u_mid|) over +-1 decade. Vectorised over samples and frequencies (batches of 200
samples), float64/complex128, one thread. Same work as the Rust, not the same random numbers."""
import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np

M = np.array([5.362e4, 5.144e4, 5.142e4])
K = np.array([3.846e8, 4.464e8, 4.589e8])
C = np.array([1.699e4, 1.016e4, 1.34e4])
E = 0.05
SAMPLES, FREQS, BATCH, BINS, SPAN = 100_000, 1000, 200, 64, 1.0
FORCE = 2  # floor 3, 0-based


def solve(m, k, c, w):
    """|u| for a unit force at FORCE; m, k, c: (B, 3); w: (F,). Returns (B, F, 3)."""
    w = w[None, :]
    kc = [k[:, i, None] + 1j * w * c[:, i, None] for i in range(3)]
    d = [kc[i] + (kc[i + 1] if i < 2 else 0) - w * w * m[:, i, None] for i in range(3)]
    off = [-kc[1], -kc[2]]
    r = [np.zeros_like(d[0]) for _ in range(3)]
    r[FORCE] = r[FORCE] + 1.0
    for i in (1, 2):
        f = off[i - 1] / d[i - 1]
        d[i] = d[i] - f * off[i - 1]
        r[i] = r[i] - f * r[i - 1]
    u2 = r[2] / d[2]
    u1 = (r[1] - off[1] * u2) / d[1]
    u0 = (r[0] - off[0] * u1) / d[0]
    return np.abs(np.stack([u0, u1, u2], axis=-1))


def main():
    rng = np.random.default_rng(1)
    w = np.linspace(5.0, 200.0, FREQS)
    lo = np.concatenate([M, K, C]) * (1 - E)
    hi = np.concatenate([M, K, C]) * (1 + E)
    mid = 0.5 * (lo + hi)
    ref = np.log10(solve(mid[None, 0:3], mid[None, 3:6], mid[None, 6:9], w)[0])  # (F, 3)
    cells = FREQS * 3
    mn = np.full(cells, np.inf)
    mx = np.full(cells, -np.inf)
    sm = np.zeros(cells)
    hist = np.zeros(cells * (BINS + 2), dtype=np.int64)
    cell_idx = np.arange(cells)[None, :] * (BINS + 2)
    for start in range(0, SAMPLES, BATCH):
        b = min(BATCH, SAMPLES - start)
        p = lo + (hi - lo) * rng.random((b, 9))
        a = solve(p[:, 0:3], p[:, 3:6], p[:, 6:9], w).reshape(b, cells)
        mn = np.minimum(mn, a.min(axis=0))
        mx = np.maximum(mx, a.max(axis=0))
        sm += a.sum(axis=0)
        pos = np.floor((np.log10(a) - ref.reshape(1, cells) + SPAN) * (BINS / (2 * SPAN)))
        pos = np.clip(pos, -1, BINS).astype(np.int64) + 1
        hist += np.bincount((cell_idx + pos).ravel(), minlength=cells * (BINS + 2))
    print(f"uncertainty peer: sum of mean |u| {np.sum(sm / SAMPLES)!r}")


if __name__ == "__main__":
    main()
