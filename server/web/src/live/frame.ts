//! Decodes the server's binary live frames (layout: server/src/live/frame.rs, version 1) into
//! views over the received buffer, without copying the values.

export const FRAME_VERSION = 1;
export const KIND_SAMPLES = 1;
export const KIND_ESTIMATE = 2;
export const DISPLACEMENT_ID = 0x1000;
export const VELOCITY_ID = 0x2000;
const HEADER_BYTES = 36;

export interface Frame {
  kind: number;
  streamId: number;
  firstSampleIndex: number;
  /** First sample time, ms since the Unix epoch (float). */
  firstTimeMs: number;
  /** Sample period, ms (0 for estimates). */
  periodMs: number;
  /** Samples per channel. */
  n: number;
  /** Channel ids in frame order. */
  ids: number[];
  /** One view per channel, `n` values each. */
  values: Float32Array[];
}

/** The frame in `buf`, or null when it is not a version-1 frame. */
export function decodeFrame(buf: ArrayBuffer): Frame | null {
  if (buf.byteLength < HEADER_BYTES) return null;
  const v = new DataView(buf);
  if (v.getUint8(0) !== FRAME_VERSION) return null;
  const kind = v.getUint8(1);
  const c = v.getUint16(4, true);
  const n = v.getUint32(8, true);
  const offset = Math.ceil((HEADER_BYTES + 2 * c) / 4) * 4;
  if (buf.byteLength < offset + 4 * c * n) return null;
  const ids: number[] = [];
  const values: Float32Array[] = [];
  for (let i = 0; i < c; i++) {
    ids.push(v.getUint16(HEADER_BYTES + 2 * i, true));
    values.push(new Float32Array(buf, offset + 4 * i * n, n));
  }
  // Nanosecond times exceed 2^53; split so milliseconds keep sub-ms precision.
  const ns = v.getBigUint64(20, true);
  const firstTimeMs = Number(ns / 1000000n) + Number(ns % 1000000n) / 1e6;
  const periodMs = Number(v.getBigUint64(28, true)) / 1e6;
  return {
    kind,
    streamId: v.getUint16(2, true),
    firstSampleIndex: Number(v.getBigUint64(12, true)),
    firstTimeMs,
    periodMs,
    n,
    ids,
    values,
  };
}
