//! Fixed-capacity rings of samples (times and per-channel values) for the live plots: pushing
//! never allocates, `ordered` copies the newest samples oldest-first into arrays uPlot draws, and
//! `orderedMinMax` gives the same window as each pixel column's minimum and maximum, so a plot
//! draws no more points than it has pixels and the trace looks the same.

export class SampleRing {
  readonly capacity: number;
  private times: Float64Array;
  private cols: Map<number, Float32Array> = new Map();
  private head = 0; // next write position
  private count = 0;

  constructor(capacity: number) {
    this.capacity = Math.max(1, capacity);
    this.times = new Float64Array(this.capacity);
  }

  clear(): void {
    this.head = 0;
    this.count = 0;
  }

  get length(): number {
    return this.count;
  }

  /** Appends `n` samples starting at `t0Ms`, `dtMs` apart, one value array per channel id. */
  push(t0Ms: number, dtMs: number, n: number, ids: number[], values: ArrayLike<number>[]): void {
    for (const id of ids) {
      if (!this.cols.has(id)) {
        const col = new Float32Array(this.capacity);
        col.fill(NaN);
        this.cols.set(id, col);
      }
    }
    for (let k = 0; k < n; k++) {
      const at = this.head;
      this.times[at] = t0Ms + k * dtMs;
      for (let c = 0; c < ids.length; c++) {
        (this.cols.get(ids[c]) as Float32Array)[at] = values[c][k];
      }
      this.head = (this.head + 1) % this.capacity;
      if (this.count < this.capacity) this.count++;
    }
  }

  /** Newest time, ms, or NaN when empty. */
  lastTimeMs(): number {
    if (this.count === 0) return NaN;
    return this.times[(this.head - 1 + this.capacity) % this.capacity];
  }

  /** Times in seconds (uPlot's unit) and each requested channel's values, oldest first. */
  ordered(ids: number[]): [Float64Array, ...Float32Array[]] {
    const n = this.count;
    const start = (this.head - n + this.capacity) % this.capacity;
    const xs = new Float64Array(n);
    const ys = ids.map(() => new Float32Array(n));
    for (let k = 0; k < n; k++) {
      const at = (start + k) % this.capacity;
      xs[k] = this.times[at] / 1000;
      for (let c = 0; c < ids.length; c++) {
        const col = this.cols.get(ids[c]);
        ys[c][k] = col ? col[at] : NaN;
      }
    }
    return [xs, ...ys];
  }

  /**
   * The window as `columns` runs of samples, each drawn as its first and last time carrying the
   * run's minimum and maximum of every channel in the order they occurred, so the line through
   * them covers exactly what the full samples would inside each pixel column. The newest point
   * keeps the newest sample's time. With fewer than two samples per column the window is given
   * as it is (`ordered`). NaN values are skipped; a run with none left stays NaN.
   */
  orderedMinMax(ids: number[], columns: number): [Float64Array, ...Float32Array[]] {
    const n = this.count;
    const cols = Math.floor(columns);
    if (cols < 1 || n < 2 * cols) return this.ordered(ids);
    const start = (this.head - n + this.capacity) % this.capacity;
    const xs = new Float64Array(2 * cols);
    const ys = ids.map(() => new Float32Array(2 * cols));
    const src = ids.map((id) => this.cols.get(id));
    for (let c = 0; c < cols; c++) {
      const lo = Math.floor((c * n) / cols);
      const hi = Math.floor(((c + 1) * n) / cols); // exclusive, > lo since n >= 2 * cols
      xs[2 * c] = this.times[(start + lo) % this.capacity] / 1000;
      xs[2 * c + 1] = this.times[(start + hi - 1) % this.capacity] / 1000;
      for (let s = 0; s < ids.length; s++) {
        const col = src[s];
        let min = NaN;
        let max = NaN;
        let minAt = 0;
        let maxAt = 0;
        if (col) {
          for (let k = lo; k < hi; k++) {
            const v = col[(start + k) % this.capacity];
            if (v !== v) continue; // NaN
            if (!(v >= min)) { min = v; minAt = k; }
            if (!(v <= max)) { max = v; maxAt = k; }
          }
        }
        const out = ys[s];
        if (minAt <= maxAt) { out[2 * c] = min; out[2 * c + 1] = max; }
        else { out[2 * c] = max; out[2 * c + 1] = min; }
      }
    }
    return [xs, ...ys];
  }
}
