//! The study page: follows the study over the SSE stream (`/api/v1/studies/{id}/events`,
//! authenticated by the session cookie) into the progress bar and state, and when it has
//! succeeded fetches the result and its arrays from the API and draws each meaningfully:
//! FRF magnitudes (log axes) and phases, uncertainty envelopes per floor, histograms, time
//! histories, Nyquist curves; other tables are shown as tables.
import { api, toLogin } from "./shared/api";
import { drawPlot, drawWithTheme, type PlotSpec, type Series } from "./shared/plot";

interface StudyRecord {
  id: string;
  state: string;
  chunks_total: number;
  chunks_done: number;
  error: string | null;
}

interface ArrayRef {
  name: string;
  rows: number;
  columns: string[];
}

interface StudyResult {
  summary: unknown;
  arrays: ArrayRef[];
  /** `name@version` of the model version the study filed as proposed, if any. */
  proposed_model?: string;
}

interface NamedArray {
  name: string;
  columns: { name: string; values: number[] }[];
}

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

function el<T extends HTMLElement>(id: string): T | null {
  return document.getElementById(id) as T | null;
}

function show(record: StudyRecord): void {
  const state = el("study-state");
  if (state) {
    state.textContent = record.state;
    state.className = `state state-${record.state}`;
  }
  const progress = el<HTMLProgressElement>("study-progress");
  const percent = record.chunks_total > 0 ? (100 * record.chunks_done) / record.chunks_total : 0;
  if (progress) {
    progress.value = record.state === "succeeded" ? 100 : percent;
    progress.textContent = `${Math.round(progress.value)} %`;
  }
  const chunks = el("study-chunks");
  if (chunks) chunks.textContent = `${record.chunks_done}/${record.chunks_total}`;
  el("study")?.setAttribute("data-state", record.state);
  if (FINAL.has(record.state)) el("cancel-form")?.remove();
  if (record.error) {
    let error = el("study-error");
    if (!error) {
      error = document.createElement("span");
      error.id = "study-error";
      error.className = "problem";
      chunks?.parentElement?.append(error);
    }
    error.textContent = record.error;
  }
}

function follow(id: string, onDone: (record: StudyRecord) => void): void {
  const source = new EventSource(`/api/v1/studies/${encodeURIComponent(id)}/events`);
  source.addEventListener("study", (event) => {
    const record = JSON.parse((event as MessageEvent<string>).data) as StudyRecord;
    show(record);
    if (FINAL.has(record.state)) {
      source.close();
      onDone(record);
    }
  });
  source.addEventListener("error", () => {
    // EventSource hides the status: ask the API whether the session is still live (a 401
    // sends the browser to the login page); otherwise let EventSource reconnect.
    if (source.readyState === EventSource.CLOSED) {
      api<unknown>("/api/v1/whoami").then(() => setTimeout(() => follow(id, onDone), 2000), () => toLogin());
    }
  });
}

function column(array: NamedArray, name: string): number[] | undefined {
  return array.columns.find((c) => c.name === name)?.values;
}

/** Plot specs for one array, by what its columns hold. */
export function plotsFor(array: NamedArray): PlotSpec[] {
  const names = array.columns.map((c) => c.name);
  const first = array.columns[0];
  if (!first) return [];
  const re = column(array, "loop_re");
  const im = column(array, "loop_im");
  if (re && im) {
    return [{
      title: `${array.name}: Nyquist of the loop transfer`, id: array.name, xLabel: "Re", yLabel: "Im",
      x: re, series: [], xy: [{ x: re, y: im, label: "loop" }],
    }];
  }
  const lower = names.find((n) => n.startsWith("bin_lower"));
  const upper = names.find((n) => n.startsWith("bin_upper"));
  const count = column(array, "count");
  if (lower && upper && count) {
    const lo = column(array, lower)!;
    const hi = column(array, upper)!;
    const outputs = column(array, "output_index");
    const groups = outputs ? [...new Set(outputs)] : [0];
    return groups.map((g) => {
      const rows = lo.map((_, i) => i).filter((i) => !outputs || outputs[i] === g);
      return {
        title: `${array.name}${outputs ? ` (output ${g})` : ""}: histogram`, id: `${array.name}${outputs ? `-output${g}` : ""}`,
        xLabel: "bin centre", yLabel: "count",
        x: rows.map((i) => (lo[i] + hi[i]) / 2), series: [{ label: "count", values: rows.map((i) => count[i]) }], bars: true,
      };
    });
  }
  const floors = column(array, "floor");
  if (floors && first.name === "frequency_hz") return envelopes(array, floors);
  const order = column(array, "order");
  const poleFreq = column(array, "frequency_hz");
  const stable = column(array, "stable");
  if (order && poleFreq && stable) {
    // Stabilisation diagram: every pole of every model order, stable ones apart.
    const pick = (keep: (s: number) => boolean) => {
      const rows = order.map((_, i) => i).filter((i) => keep(stable[i]));
      return { x: rows.map((i) => poleFreq[i]), y: rows.map((i) => order[i]) };
    };
    return [{
      title: `${array.name}: stabilisation diagram`, id: array.name, xLabel: "frequency_hz", yLabel: "model order",
      x: poleFreq, series: [], scatter: true,
      xy: [{ ...pick((s) => s > 0.5), label: "stable" }, { ...pick((s) => s <= 0.5), label: "not stable" }],
    }];
  }
  if (stable && first.name === "frequency_hz") {
    // A response curve: the stable and unstable branches as two series (gaps where the other is).
    const amplitude = array.columns.find((c) => c.name !== "frequency_hz" && c.name !== "stable");
    if (amplitude) {
      const branch = (keep: boolean) => amplitude.values.map((v, i) => ((stable[i] > 0.5) === keep ? v : null));
      return [{
        title: `${array.name}: response curve`, id: array.name, xLabel: "frequency_hz", yLabel: amplitude.name,
        x: first.values,
        series: [
          { label: "stable", values: branch(true) },
          { label: "unstable", values: branch(false), dash: [5, 4] },
        ],
      }];
    }
  }
  if (first.name === "floor" || first.name === "elements_per_leg") {
    // Mode shapes against the floor, or frequencies against mesh refinement.
    return [{
      title: `${array.name}: ${first.name === "floor" ? "mode shapes" : "convergence with the mesh"}`, id: array.name,
      xLabel: first.name, yLabel: first.name === "floor" ? "shape" : "Hz", x: first.values,
      series: array.columns.slice(1).map((c): Series => ({ label: c.name, values: c.values })),
    }];
  }
  const isTime = first.name.startsWith("time");
  const isFreq = first.name === "frequency_hz";
  if (!isTime && !isFreq) return [];
  const rest = array.columns.slice(1);
  const phase = rest.filter((c) => c.name.includes("phase"));
  const drawn = rest.filter((c) => !c.name.includes("phase") && !/_re_|_im_|_re$|_im$/.test(c.name));
  const plots: PlotSpec[] = [];
  if (drawn.length > 0) {
    const allPositive = drawn.every((c) => c.values.every((v) => !Number.isFinite(v) || v > 0));
    plots.push({
      title: isTime ? `${array.name}: time history` : `${array.name}: magnitude`, id: array.name,
      xLabel: first.name, yLabel: isTime ? "value" : "magnitude", x: first.values,
      series: drawn.map((c): Series => ({ label: c.name, values: c.values })),
      logX: isFreq && first.values.every((v) => v > 0) ? true : false, logY: isFreq && allPositive,
    });
  }
  if (phase.length > 0) {
    plots.push({
      title: `${array.name}: phase`, id: `${array.name}-phase`, xLabel: first.name, yLabel: "deg",
      x: first.values, series: phase.map((c) => ({ label: c.name, values: c.values })), logX: true,
    });
  }
  return plots;
}

/** Uncertainty bounds: one plot per floor, the outer and inner bounds as shaded envelopes and
 * the Monte Carlo extremes and median as lines, log axes. */
function envelopes(array: NamedArray, floors: number[]): PlotSpec[] {
  const freq = array.columns[0].values;
  return [...new Set(floors)].map((floor) => {
    const rows = floors.map((f, i) => (f === floor ? i : -1)).filter((i) => i >= 0);
    const pick = (name: string) => {
      const values = column(array, name);
      return values ? rows.map((i) => values[i]) : undefined;
    };
    const series: Series[] = [];
    const bands: [number, number][] = [];
    const pair = (hi: string, lo: string, color: string) => {
      const h = pick(hi);
      const l = pick(lo);
      if (!h || !l) return;
      series.push({ label: hi, values: h, color }, { label: lo, values: l, color });
      bands.push([series.length - 2, series.length - 1]);
    };
    pair("outer_upper_m", "outer_lower_m", "#d62728");
    pair("inner_upper_m", "inner_lower_m", "#1f77b4");
    for (const [name, color] of [["mc_max_m", "#2ca02c"], ["mc_min_m", "#2ca02c"], ["mc_p50_m", "#ff7f0e"]] as const) {
      const values = pick(name);
      if (values) series.push({ label: name, values, color, dash: [4, 3] });
    }
    return {
      title: `${array.name}: |u| of floor ${floor} (outer, inner bounds and Monte Carlo)`, id: `${array.name}-floor${floor}`,
      xLabel: "frequency_hz", yLabel: "m/N", x: rows.map((i) => freq[i]), series, bands, logX: true, logY: true,
    };
  });
}

function table(array: NamedArray): HTMLElement {
  const card = document.createElement("section");
  card.className = "plot table-wrap";
  const title = document.createElement("h3");
  title.textContent = array.name;
  const t = document.createElement("table");
  const head = t.createTHead().insertRow();
  for (const c of array.columns) {
    const th = document.createElement("th");
    th.className = "num";
    th.textContent = c.name;
    head.append(th);
  }
  const body = t.createTBody();
  const rows = array.columns[0]?.values.length ?? 0;
  for (let i = 0; i < Math.min(rows, 200); i++) {
    const tr = body.insertRow();
    for (const c of array.columns) {
      const td = tr.insertCell();
      td.className = "num";
      td.textContent = String(c.values[i]);
    }
  }
  const link = document.createElement("a");
  link.href = `/api/v1/studies/${encodeURIComponent(studyId())}/arrays/${encodeURIComponent(array.name)}?format=csv`;
  link.textContent = `CSV (${rows} rows)`;
  link.className = "csv";
  card.append(title, t, link);
  return card;
}

function studyId(): string {
  return el("study")?.dataset.studyId ?? "";
}

function summaryTable(summary: unknown): HTMLElement {
  const t = document.createElement("table");
  const entries: [string, unknown][] =
    summary && typeof summary === "object" && !Array.isArray(summary) ? Object.entries(summary) : [["value", summary]];
  for (const [key, value] of entries) {
    const tr = t.insertRow();
    const th = document.createElement("th");
    th.textContent = String(key);
    const td = tr.insertCell();
    td.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
    tr.prepend(th);
  }
  return t;
}

async function showResult(id: string): Promise<void> {
  const result = await api<StudyResult>(`/api/v1/studies/${encodeURIComponent(id)}/result`);
  const arrays = await Promise.all(
    result.arrays.map((a) => api<NamedArray>(`/api/v1/studies/${encodeURIComponent(id)}/arrays/${encodeURIComponent(a.name)}`)),
  );
  el("result")?.removeAttribute("hidden");
  if (result.proposed_model) {
    const [name, version] = result.proposed_model.split("@");
    const link = el<HTMLAnchorElement>("proposed-link");
    if (link && name && version) {
      link.href = `/models/${encodeURIComponent(name)}/${encodeURIComponent(version)}`;
      link.textContent = result.proposed_model;
      el("proposed-model")?.removeAttribute("hidden");
    }
  }
  el("summary")?.replaceChildren(summaryTable(result.summary));
  const plots = el("plots");
  if (!plots) return;
  drawWithTheme(plots, () => {
    for (const array of arrays) {
      const specs = plotsFor(array);
      if (specs.length === 0) plots.append(table(array));
      for (const spec of specs) drawPlot(plots, spec);
    }
    plots.dataset.drawn = String(plots.querySelectorAll(".plot").length);
  });
}

function main(): void {
  const id = studyId();
  if (!id) return;
  follow(id, (record) => {
    if (record.state === "succeeded") {
      showResult(id).catch((e: unknown) => {
        const plots = el("plots");
        if (plots) plots.textContent = `Cannot load the result: ${String(e)}`;
      });
    }
  });
}

document.addEventListener("DOMContentLoaded", main);
