"""pyOMA2 peer of `oma/examples/bench_ssi.rs` (issue 14 benchmark).

Reads the record the example wrote (target/oma-bench/record.f64: raw little-endian f64,
sample-major, N x channels) and its truth (truth.json), runs pyOMA2's SSI-cov with the same
block rows and orders, picks modes two ways (automatic clustering, "Magalhaes" quick
preset; and the supervised `mpe` at the true frequencies), and prints times and the
frequencies and damping ratios found against the truth.

Run on one core, like the Rust side:
  python3 -m venv target/pyoma-venv && target/pyoma-venv/bin/pip install 'pyoma-2==1.4.3'
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    target/pyoma-venv/bin/python oma/bench/pyoma2_ssi.py
"""

import json
import logging
import pathlib
import time

import numpy as np
from pyoma2.algorithms import SSI
from pyoma2.algorithms.data.run_params import Clustering
from pyoma2.setup import SingleSetup

logging.disable(logging.WARNING)

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH = ROOT / "target" / "oma-bench"
RUNS = 3


def report(label, fn, xi, truth_f, truth_xi):
    print(label)
    fn = np.asarray(fn, dtype=float)
    xi = np.asarray(xi, dtype=float)
    print(f"  modes found: {len(fn)}: {np.round(fn, 4).tolist()} Hz")
    for f, z in zip(truth_f, truth_xi):
        if len(fn) == 0:
            print(f"  {f:.4f} Hz: not found")
            continue
        k = int(np.argmin(np.abs(fn - f)))
        print(
            f"  model {f:.4f} Hz, {100 * z:.3f} %: found {fn[k]:.4f} Hz "
            f"({100 * (fn[k] / f - 1):+.3f} %), {100 * xi[k]:.3f} % "
            f"({100 * (xi[k] / z - 1):+.1f} %)"
        )


def main():
    truth = json.loads((BENCH / "truth.json").read_text())
    fs = truth["sample_rate_hz"]
    channels = truth["channels"]
    data = np.fromfile(BENCH / "record.f64", dtype="<f8").reshape(-1, channels)
    print(f"record: {channels} channels x {data.shape[0]} samples at {fs} Hz")
    truth_f, truth_xi = truth["frequencies_hz"], truth["damping_ratios"]

    times = []
    cpu = []
    for _ in range(RUNS):
        setup = SingleSetup(data, fs=fs)
        ssi = SSI(name="SSIcov", method="cov", br=80, ordmin=2, ordmax=40, step=2)
        setup.add_algorithms(ssi)
        start, cpu_start = time.perf_counter(), time.process_time()
        setup.run_by_name("SSIcov")
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    print(
        f"pyOMA2 SSI-cov (br = 80, orders 2..40 step 2): median {np.median(times):.3f} s "
        f"of {RUNS} (min {min(times):.3f} s); {np.median(cpu):.3f} CPU s (median)"
    )

    ssi.add_clustering(Clustering(name="auto", quick="Magalhaes", freqlim=(0.5, fs / 2)))
    cpu_start = time.process_time()
    ssi.run_clustering(name="auto")
    print(f"pyOMA2 clustering (Magalhaes preset): {time.process_time() - cpu_start:.3f} CPU s")
    clustered = ssi.result.clustering_results["auto"]
    report("automatic (clustering):", clustered.Fn, clustered.Xi, truth_f, truth_xi)

    start = time.perf_counter()
    setup.mpe("SSIcov", sel_freq=truth_f, order_in="find_min")
    mpe_s = time.perf_counter() - start
    print(f"pyOMA2 mpe at the true frequencies: {mpe_s:.3f} s")
    report("supervised (mpe at the true frequencies):", ssi.result.Fn, ssi.result.Xi,
           truth_f, truth_xi)


if __name__ == "__main__":
    main()
