"""NumPy peer of the `design` study as run by
`cargo run --release -p dtop-studies --example bench_kinds -- design`: Cristallo's 3-floor
defaults (c2, c3 as Gaussians), all 6 outputs (|x_i| and k_i|x_i - x_(i-1)|) at 1.97 Hz, 10^6
samples in batches of 16384; the same pilot (nominal + central-difference delta-method std),
histograms (20 bins), failures, score sums (20 distribution parameters) and the sums behind the
Fisher matrix. Vectorised, float64, one thread. Same work as the Rust, not the same random
numbers."""
import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np

MEAN = np.array([4.8724882, 5.4758033, 5.6923249, 4203.0027, 4147.6895, 5101.4822,
                 2.2007146, 0.6018186, 2.3842358, 1.0, 0.0, 0.0])
STD = np.array([0.0312982, 0.1002168, 0.1144056, 83.760278, 69.627281, 56.769849,
                0.2589255, 0.0015333, 0.0010963, 0.1, 0.0, 0.0])
F_HZ, SAMPLES, BATCH, BINS = 1.97, 1_000_000, 16_384, 20
RANDOM = np.nonzero(STD > 0)[0]


def outputs(x, w):
    """x: (B, 12) inputs -> (B, 6) outputs."""
    m, k, c, f = x[:, 0:3], x[:, 3:6], x[:, 6:9], x[:, 9:12]
    kc = k + 1j * w * c
    d0 = kc[:, 0] + kc[:, 1] - w * w * m[:, 0]
    d1 = kc[:, 1] + kc[:, 2] - w * w * m[:, 1]
    d2 = kc[:, 2] - w * w * m[:, 2]
    o0, o1 = -kc[:, 1], -kc[:, 2]
    r0, r1, r2 = f[:, 0].astype(complex), f[:, 1].astype(complex), f[:, 2].astype(complex)
    q = o0 / d0
    d1 = d1 - q * o0
    r1 = r1 - q * r0
    q = o1 / d1
    d2 = d2 - q * o1
    r2 = r2 - q * r1
    u2 = r2 / d2
    u1 = (r1 - o1 * u2) / d1
    u0 = (r0 - o0 * u1) / d0
    return np.stack([np.abs(u0), np.abs(u1), np.abs(u2),
                     k[:, 0] * np.abs(u0), k[:, 1] * np.abs(u1 - u0), k[:, 2] * np.abs(u2 - u1)], axis=1)


def main():
    w = 2 * np.pi * F_HZ
    nominal = outputs(MEAN[None, :], w)[0]
    var = np.zeros(6)
    for j in RANDOM:
        h = 1e-4 * STD[j]
        xp, xm = MEAN.copy(), MEAN.copy()
        xp[j] += h
        xm[j] -= h
        var += ((outputs(xp[None], w)[0] - outputs(xm[None], w)[0]) / (2 * h) * STD[j]) ** 2
    sd = np.sqrt(var)
    lower = np.maximum(nominal - 6 * sd, 0)
    width = (nominal + 6 * sd - lower) / BINS
    threshold = nominal + 3 * sd
    rng = np.random.default_rng(1)
    o, p = 6, 2 * len(RANDOM)
    sy, syy, sys_, syys = np.zeros(o), np.zeros((o, o)), np.zeros((o, p)), np.zeros((o, o, p))
    ss, sfs, sfss = np.zeros(p), np.zeros((o, p)), np.zeros((o, p))
    hist = np.zeros((o, BINS + 2), dtype=np.int64)
    fails = np.zeros(o, dtype=np.int64)
    for start in range(0, SAMPLES, BATCH):
        b = min(BATCH, SAMPLES - start)
        z = rng.standard_normal((b, len(RANDOM)))
        x = np.tile(MEAN, (b, 1))
        x[:, RANDOM] += STD[RANDOM] * z
        y = outputs(x, w)
        mu, sg = MEAN[RANDOM], STD[RANDOM]
        dz = x[:, RANDOM] - mu
        s = np.concatenate([dz / sg**2, (dz**2 - sg**2) / sg**3], axis=1)
        fail = (y > threshold).astype(float)
        sy += y.sum(0)
        syy += y.T @ y
        ss += s.sum(0)
        sys_ += y.T @ s
        syys += np.einsum("ba,bc,bk->ack", y, y, s, optimize=True)
        sfs += fail.T @ s
        sfss += fail.T @ (s * s)
        fails += fail.sum(0).astype(np.int64)
        pos = np.clip(np.floor((y - lower) / width), -1, BINS).astype(np.int64) + 1
        for a in range(o):
            hist[a] += np.bincount(pos[:, a], minlength=BINS + 2)
    print(f"design peer: outputs mean {list(sy / SAMPLES)}")


if __name__ == "__main__":
    main()
