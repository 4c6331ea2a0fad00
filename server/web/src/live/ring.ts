//! Fixed-capacity rings of samples (times and per-channel values) for the live plots: pushing
//! never allocates, and `ordered` copies the newest samples oldest-first into arrays uPlot draws.

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
}
