//! The live rig page (`/rigs/{rig}`): one WebSocket to `/ws/rigs/{rig}` feeds rings of samples
//! and estimates; uPlot draws acceleration, force, estimated displacement and velocity with a
//! shared cursor, redrawn at most once per animation frame. Pause, drag-zoom (double click
//! resets), history for a chosen range (min–max bands per pixel, gaps where nothing was stored,
//! and the server's CSV of it), CSV/PNG export of what is shown, "stale since" when
//! data stops, reconnect with backoff, and the command panel for those allowed to command.

import uPlot from "uplot";
import { decodeFrame, DISPLACEMENT_ID, KIND_ESTIMATE, KIND_SAMPLES, VELOCITY_ID } from "./frame";
import { showCbc } from "./cbc_panel";
import { SampleRing } from "./ring";
import { csrfHeaders, downloadBlob, hhmmss, text } from "./util";

interface Channel {
  id: number;
  name: string;
  kind: string;
  unit: string;
  floor: number;
  stream_id: number;
  sample_rate_hz: number;
}

interface Envelope {
  name: string;
  min: (number | null)[];
  max: (number | null)[];
}

/** `GET /api/v1/rigs/{rig}/history`: every bucket of the range, null where it holds no sample. */
interface HistoryAnswer {
  rig: string;
  t_ms: number[];
  bucket_ms: number;
  channels: Envelope[];
}

interface PlotSpec {
  el: HTMLElement;
  title: string;
  unit: string;
  ring: () => SampleRing;
  ids: number[];
  labels: string[];
  plot?: uPlot;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
const SYNC_KEY = "dtop-rig";

export function startRigPage(root: HTMLElement): void {
  const rig = root.dataset.rig ?? "";
  const mayCommand = root.dataset.mayCommand === "true";
  let windowS = Number(root.dataset.windowS ?? "10");
  let samples = new SampleRing(1);
  let estimates = new SampleRing(1);
  let channels: Channel[] = [];
  let plots: PlotSpec[] = [];
  let paused = false;
  let mode: "live" | "history" = "live";
  let dirty = false;
  let lastMessageMs = Date.now();
  let staleSinceMs: number | null = null;
  let droppedTotal = 0;
  let floors = 0;
  const summaryEl = root.querySelector<HTMLElement>("#summary");
  const staleEl = root.querySelector<HTMLElement>("#stale");
  const rmsEl = root.querySelector<HTMLElement>("#rms");
  const acksEl = root.querySelector<HTMLElement>("#acks");
  const plotsEl = root.querySelector<HTMLElement>("#plots") as HTMLElement;

  // What the benchmarks read (server/examples/web_bench.rs, BENCHMARKS.md): each redraw's
  // time, and per redraw `[drawn, newest sample, next frame]` (ms since the Unix epoch: when
  // the plots were drawn, the newest sample they show, the start of the frame after, by which
  // the drawing was on screen). Bounded; kept whether or not anyone reads them.
  const redrawMs: number[] = [];
  const draws: [number, number | null, number | null][] = [];
  (window as unknown as { dtopLive: unknown }).dtopLive = {
    redrawMs,
    draws,
    frames: 0,
    bytes: 0,
    points: () => samples.length,
    // What the first plot draws now: its point count, the samples they stand for, and its
    // newest point (a test reads it twice to see the trace move on screen, not only frames
    // arrive).
    drawn: () => {
      const data = plots[0]?.plot?.data;
      const n = data ? (data[0] as ArrayLike<number>).length : 0;
      if (!data || n === 0) return null;
      return { n, samples: plots[0].ring().length, t_last: (data[0] as ArrayLike<number>)[n - 1], y_last: (data[1] as ArrayLike<number | null>)[n - 1] };
    },
    // Per series of the first plot, [min, max] of what is drawn and of every sample in the
    // window: a test compares them to see that drawing per pixel loses no extreme. It draws
    // the live window first, in the same task, so no frame arrives in between.
    extremes: () => {
      const p = plots[0];
      if (!p?.plot) return null;
      drawLive(p, p.plot);
      const range = (ys: ArrayLike<number | null>): [number, number] => {
        let lo = Infinity;
        let hi = -Infinity;
        for (let i = 0; i < ys.length; i++) {
          const v = ys[i];
          if (v === null || v !== v) continue;
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        return [lo, hi];
      };
      const all = p.ring().ordered(p.ids);
      return {
        drawn: p.plot.data.slice(1).map((ys) => range(ys as ArrayLike<number | null>)),
        samples: all.slice(1).map((ys) => range(ys)),
        drawn_points: (p.plot.data[0] as ArrayLike<number>).length,
        samples_n: all[0].length,
      };
    },
  };
  const stats = (window as unknown as { dtopLive: { frames: number; bytes: number } }).dtopLive;

  function buildPlots(): void {
    plotsEl.replaceChildren();
    plots = [];
    const accel = channels.filter((c) => c.stream_id === 0 && c.kind === "acceleration");
    const force = channels.filter((c) => c.stream_id === 0 && c.kind === "force");
    const rate = channels.find((c) => c.stream_id === 0)?.sample_rate_hz ?? 1000;
    samples = new SampleRing(Math.ceil(windowS * rate));
    estimates = new SampleRing(Math.ceil(windowS * 100));
    const floorList = Array.from({ length: floors }, (_, i) => i + 1);
    const specs: Omit<PlotSpec, "el">[] = [
      { title: "Floor acceleration", unit: "m/s²", ring: () => samples, ids: accel.map((c) => c.id), labels: accel.map((c) => c.name) },
      { title: "Force", unit: "N", ring: () => samples, ids: force.map((c) => c.id), labels: force.map((c) => c.name) },
      { title: "Estimated displacement (twin)", unit: "m", ring: () => estimates, ids: floorList.map((f) => DISPLACEMENT_ID + f), labels: floorList.map((f) => `floor ${f}`) },
      { title: "Estimated velocity (twin)", unit: "m/s", ring: () => estimates, ids: floorList.map((f) => VELOCITY_ID + f), labels: floorList.map((f) => `floor ${f}`) },
    ];
    for (const spec of specs) {
      if (spec.ids.length === 0) continue;
      const figure = document.createElement("figure");
      figure.className = "plot";
      const caption = document.createElement("figcaption");
      caption.textContent = `${spec.title} (${spec.unit})`;
      figure.append(caption);
      plotsEl.append(figure);
      const p: PlotSpec = { ...spec, el: figure };
      const width = Math.max(300, plotsEl.clientWidth - 8);
      p.plot = new uPlot(
        {
          width,
          height: 200,
          cursor: { sync: { key: SYNC_KEY }, drag: { x: true, y: false } },
          scales: { x: { time: true } },
          series: [{}, ...spec.labels.map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], width: 1 }))],
          axes: [{}, { label: spec.unit }],
          hooks: {
            setSelect: [() => { if (mode === "live") setPaused(true); }],
          },
        },
        [[], ...spec.ids.map(() => [])] as unknown as uPlot.AlignedData,
        figure,
      );
      plots.push(p);
    }
  }

  // No more points than the canvas has pixel columns (min and max of each), so the cost of
  // drawing follows the plot's width, not the window's length.
  function drawLive(p: PlotSpec, plot: uPlot): void {
    plot.setData(p.ring().orderedMinMax(p.ids, plot.bbox.width) as unknown as uPlot.AlignedData);
  }

  function redraw(): void {
    if (!dirty || paused || mode !== "live") return;
    dirty = false;
    const t0 = performance.now();
    for (const p of plots) {
      const plot = p.plot;
      if (!plot) continue;
      // `batch` draws here, not in the microtask uPlot would queue after this callback, so the
      // time taken below covers the drawing.
      plot.batch(() => drawLive(p, plot));
    }
    const t1 = performance.now();
    redrawMs.push(t1 - t0);
    if (redrawMs.length > 1000) redrawMs.shift();
    const newest = samples.lastTimeMs();
    draws.push([performance.timeOrigin + t1, Number.isNaN(newest) ? null : newest, null]);
    if (draws.length > 1000) draws.shift();
  }
  function frameLoop(frameMs: number): void {
    const last = draws[draws.length - 1];
    if (last && last[2] === null) last[2] = performance.timeOrigin + frameMs;
    redraw();
    requestAnimationFrame(frameLoop);
  }
  requestAnimationFrame(frameLoop);

  function setPaused(p: boolean): void {
    paused = p;
    const b = root.querySelector<HTMLButtonElement>("#pause");
    if (b) b.textContent = paused ? "Resume" : "Pause";
    if (!paused) dirty = true;
    // Paused, the plots hold every sample of the window, so a drag-zoom shows them all; the
    // scales stay as they are (a zoom that paused the page keeps its range).
    if (paused && mode === "live") {
      for (const p of plots) p.plot?.setData(p.ring().ordered(p.ids) as unknown as uPlot.AlignedData, false);
    }
  }

  function showSummary(s: Record<string, unknown>): void {
    if (!summaryEl) return;
    for (const el of summaryEl.querySelectorAll<HTMLElement>("[data-field]")) {
      const key = el.dataset.field as string;
      let v = s[key];
      if (key === "data_age_s" && typeof v === "number") v = v.toFixed(2);
      if (key === "backlog_s" && typeof v === "number") v = v.toFixed(2);
      if (key === "dropped_frames") v = droppedTotal;
      el.textContent = v === null || v === undefined ? "–" : String(v);
    }
    if (rmsEl) {
      const measured = (s.floor_rms_m_s2 ?? {}) as Record<string, number>;
      const twin = (s.twin_floor_rms_m_s2 ?? {}) as Record<string, number>;
      const rows = Object.keys(measured).map((f) => {
        const tr = document.createElement("tr");
        tr.append(text("td", `floor ${f}`), text("td", measured[f].toExponential(3)), text("td", twin[f] !== undefined ? twin[f].toExponential(3) : "–"));
        return tr;
      });
      rmsEl.replaceChildren(...rows);
    }
    const stale = typeof s.stale_since_ns === "number" ? (s.stale_since_ns as number) / 1e6 : null;
    setStale(stale);
    showLimit(root, s.dvf_limit as GainLimit | null, s.dvf_limit_unavailable as string | null);
  }

  function setStale(sinceMs: number | null): void {
    staleSinceMs = sinceMs;
    if (!staleEl) return;
    if (sinceMs === null) {
      staleEl.hidden = true;
    } else {
      staleEl.hidden = false;
      staleEl.textContent = `stale since ${hhmmss(sinceMs)}`;
    }
  }

  function showAck(a: Record<string, unknown>): void {
    if (!acksEl) return;
    const li = document.createElement("li");
    li.className = `ack ack-${String(a.status)}`;
    li.dataset.commandId = String(a.command_id);
    const at = a.status === "applied" || a.status === "latched" ? ` at sample ${a.applied_at_sample_index}` : "";
    const why = a.reason ? `: ${a.reason}` : "";
    li.textContent = `${hhmmss(Date.now())} ${a.command_id}: ${a.status}${at}${why}`;
    const pending = acksEl.querySelector(`li[data-pending="${String(a.command_id)}"]`);
    if (pending) pending.replaceWith(li);
    else acksEl.prepend(li);
  }

  // The feed, reconnecting with backoff.
  let backoffMs = 500;
  function connect(): void {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws/rigs/${encodeURIComponent(rig)}`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { backoffMs = 500; };
    ws.onmessage = (ev: MessageEvent) => {
      lastMessageMs = Date.now();
      if (ev.data instanceof ArrayBuffer) {
        stats.frames++;
        stats.bytes += ev.data.byteLength;
        const f = decodeFrame(ev.data);
        if (!f) return;
        if (f.kind === KIND_SAMPLES && f.streamId === 0) {
          samples.push(f.firstTimeMs, f.periodMs, f.n, f.ids, f.values);
          dirty = true;
        } else if (f.kind === KIND_ESTIMATE) {
          estimates.push(f.firstTimeMs, 0, f.n, f.ids, f.values);
          dirty = true;
        }
        return;
      }
      stats.bytes += String(ev.data).length;
      const m = JSON.parse(String(ev.data)) as Record<string, unknown>;
      switch (m.type) {
        case "meta": {
          channels = (m.channels ?? []) as Channel[];
          floors = Number(m.floors ?? 0);
          windowS = Number(m.window_s ?? windowS);
          buildPlots();
          break;
        }
        case "status": showSummary(m); break;
        case "ack": showAck(m); break;
        case "cbc": {
          const panel = root.querySelector<HTMLElement>("#cbc");
          if (panel) showCbc(panel, m.run as Parameters<typeof showCbc>[1]);
          break;
        }
        case "dropped": droppedTotal = Number(m.total); break;
        default: break;
      }
    };
    ws.onclose = (ev: CloseEvent) => {
      if (ev.code === 4403 || ev.code === 4401) {
        setStale(lastMessageMs);
        if (staleEl) staleEl.textContent += ` (${ev.reason})`;
        return;
      }
      setStale(staleSinceMs ?? lastMessageMs);
      setTimeout(connect, backoffMs * (0.5 + Math.random()));
      backoffMs = Math.min(backoffMs * 2, 15000);
    };
  }
  connect();
  // The server says stale in its summary; a dead connection says nothing, so check here too.
  setInterval(() => {
    if (Date.now() - lastMessageMs > 3000 && staleSinceMs === null) setStale(lastMessageMs);
  }, 1000);

  root.querySelector("#pause")?.addEventListener("click", () => setPaused(!paused));

  // History: min and max per pixel of a past range (the server's bucket rule), drawn as a band
  // per channel in plots of their own that stand in for the live ones until "Live".
  const historyEl = root.querySelector<HTMLElement>("#history-plots") as HTMLElement;
  const msgEl = root.querySelector<HTMLElement>("#history-message");
  const csvLink = root.querySelector<HTMLAnchorElement>("#history-csv");
  let historyPlots: { title: string; labels: string[]; plot: uPlot }[] = [];
  let shownRange: { from_ms: number; to_ms: number; px: number; buckets: number } | null = null;

  function showMode(m: "live" | "history"): void {
    mode = m;
    plotsEl.hidden = m !== "live";
    historyEl.hidden = m !== "history";
    if (csvLink) csvLink.hidden = m !== "history";
  }

  function drawHistory(body: HistoryAnswer): void {
    for (const h of historyPlots) h.plot.destroy();
    historyEl.replaceChildren();
    historyPlots = [];
    const xs = body.t_ms.map((t) => t / 1000);
    const groups = [
      { title: "Floor acceleration", unit: "m/s²", kind: "acceleration" },
      { title: "Force", unit: "N", kind: "force" },
    ];
    const width = Math.max(300, historyEl.clientWidth - 8);
    for (const g of groups) {
      const names = channels.filter((c) => c.stream_id === 0 && c.kind === g.kind).map((c) => c.name);
      const envelopes = names
        .map((n) => body.channels.find((c) => c.name === n))
        .filter((c): c is Envelope => c !== undefined);
      if (envelopes.length === 0) continue;
      const figure = document.createElement("figure");
      figure.className = "plot";
      figure.dataset.history = g.kind;
      const caption = document.createElement("figcaption");
      caption.textContent = `${g.title} (${g.unit}), min–max per pixel of ${body.bucket_ms} ms`;
      figure.append(caption);
      historyEl.append(figure);
      const series: uPlot.Series[] = [{}];
      const bands: uPlot.Band[] = [];
      const data: (number | null)[][] = [];
      const labels: string[] = [];
      envelopes.forEach((e, i) => {
        const color = COLORS[i % COLORS.length];
        series.push({ label: `${e.name} max`, stroke: color, width: 1 });
        series.push({ label: `${e.name} min`, stroke: color, width: 1 });
        bands.push({ series: [2 * i + 1, 2 * i + 2], fill: `${color}33` });
        data.push(e.max, e.min);
        labels.push(`${e.name}_max`, `${e.name}_min`);
      });
      const plot = new uPlot(
        {
          width,
          height: 200,
          cursor: { sync: { key: `${SYNC_KEY}-history` }, drag: { x: true, y: false } },
          scales: { x: { time: true } },
          series,
          bands,
          axes: [{}, { label: g.unit }],
        },
        [xs, ...data] as unknown as uPlot.AlignedData,
        figure,
      );
      historyPlots.push({ title: g.title, labels, plot });
    }
  }

  root.querySelector("#history-form")?.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const from = Date.parse((root.querySelector<HTMLInputElement>("#hist-from") as HTMLInputElement).value);
    const to = Date.parse((root.querySelector<HTMLInputElement>("#hist-to") as HTMLInputElement).value);
    if (Number.isNaN(from) || Number.isNaN(to)) {
      if (msgEl) msgEl.textContent = "Choose both ends of the range.";
      return;
    }
    const px = Math.min(10000, Math.max(100, Math.floor((plotsEl.parentElement ?? plotsEl).clientWidth)));
    const query = `from_ms=${from}&to_ms=${to}&px=${px}`;
    const base = `/api/v1/rigs/${encodeURIComponent(rig)}`;
    if (msgEl) msgEl.textContent = "Loading…";
    const r = await fetch(`${base}/history?${query}`, { credentials: "same-origin" });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      const problems = (body.problems ?? []).map((p: { field: string; message: string }) => `${p.field}: ${p.message}`).join("; ");
      if (msgEl) msgEl.textContent = `${body.message ?? `history: ${r.status}`}${problems ? " " + problems : ""}`;
      return;
    }
    if (msgEl) msgEl.textContent = "";
    setPaused(true);
    showMode("history");
    drawHistory(body as HistoryAnswer);
    shownRange = { from_ms: from, to_ms: to, px, buckets: (body as HistoryAnswer).t_ms.length };
    if (csvLink) {
      csvLink.href = `${base}/history.csv?${query}`;
      csvLink.download = `${rig}-${from}-${to}.csv`;
    }
  });
  root.querySelector("#live")?.addEventListener("click", () => { showMode("live"); setPaused(false); });

  // What is shown, for the page's own exports and for the browser tests.
  (stats as unknown as { shown: () => unknown }).shown = () => ({
    mode,
    range: mode === "history" ? shownRange : null,
    plots: (mode === "history" ? historyPlots.map((h) => ({ title: h.title, labels: h.labels, data: h.plot.data }))
      : plots.map((p) => ({ title: p.title, labels: p.labels, data: p.plot?.data ?? [] })))
      .map((p) => ({
        title: p.title,
        labels: p.labels,
        points: (p.data[0] as ArrayLike<number> | undefined)?.length ?? 0,
        values: p.data.slice(1).reduce((n, s) => n + Array.from(s as ArrayLike<number | null>).filter((v) => v !== null && v !== undefined).length, 0),
        x0: (p.data[0] as ArrayLike<number> | undefined)?.[0] ?? null,
      })),
  });

  // Export what is shown (the live window, or the history's min/max).
  function shownForExport(): { title: string; labels: string[]; plot: uPlot }[] {
    if (mode === "history") return historyPlots;
    return plots.filter((p) => p.plot).map((p) => ({ title: p.title, labels: p.labels, plot: p.plot as uPlot }));
  }
  // Live, every sample inside the plot's visible time range (the drawing holds only each pixel
  // column's extremes); in history, the buckets as drawn.
  function exportRows(p: { title: string; plot: uPlot }): uPlot.AlignedData {
    const live = mode === "live" ? plots.find((q) => q.plot === p.plot) : undefined;
    if (!live) return p.plot.data;
    const all = live.ring().ordered(live.ids);
    const { min, max } = p.plot.scales.x;
    const xs = all[0];
    let lo = 0;
    let hi = xs.length;
    if (min !== undefined && min !== null) while (lo < hi && xs[lo] < min) lo++;
    if (max !== undefined && max !== null) while (hi > lo && xs[hi - 1] > max) hi--;
    return all.map((col) => col.subarray(lo, hi)) as unknown as uPlot.AlignedData;
  }
  root.querySelector("#export-csv")?.addEventListener("click", () => {
    for (const p of shownForExport()) {
      const data = exportRows(p);
      const lines = [["time_s", ...p.labels].join(",")];
      const xs = data[0] as ArrayLike<number>;
      for (let i = 0; i < xs.length; i++) {
        lines.push([xs[i], ...p.labels.map((_, c) => (data[c + 1] as ArrayLike<number | null>)[i] ?? "")].join(","));
      }
      downloadBlob(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }), `${rig}-${p.title.replace(/\W+/g, "_")}.csv`);
    }
  });
  root.querySelector("#export-png")?.addEventListener("click", () => {
    for (const p of shownForExport()) {
      p.plot.ctx.canvas.toBlob((b) => { if (b) downloadBlob(b, `${rig}-${p.title.replace(/\W+/g, "_")}.png`); });
    }
  });

  if (mayCommand) wireCommands(root, rig, acksEl);
}

async function send(rig: string, body: Record<string, unknown>, acksEl: HTMLElement | null, out: HTMLElement | null): Promise<void> {
  const r = await fetch(`/api/v1/rigs/${encodeURIComponent(rig)}/commands`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", ...csrfHeaders() },
    body: JSON.stringify(body),
  });
  const answer = await r.json().catch(() => ({}));
  if (r.status === 202) {
    if (out) out.textContent = "";
    // The rig may answer before this response arrives: then its line is there already.
    if (acksEl && !acksEl.querySelector(`li[data-command-id="${String(answer.command_id)}"]`)) {
      const li = document.createElement("li");
      li.dataset.pending = answer.command_id;
      li.className = "ack ack-pending";
      li.textContent = `${hhmmss(Date.now())} ${answer.command_id}: ${String(body.kind)} sent, waiting for the rig…`;
      acksEl.prepend(li);
    }
  } else if (out) {
    const problems = (answer.problems ?? []).map((p: { field: string; message: string }) => `${p.field}: ${p.message}`).join("; ");
    out.textContent = `${answer.message ?? r.status}${problems ? " " + problems : ""}`;
  }
}

function wireCommands(root: HTMLElement, rig: string, acksEl: HTMLElement | null): void {
  const out = root.querySelector<HTMLElement>("#command-message");
  root.querySelector("#cmd-safety-stop")?.addEventListener("click", () => send(rig, { kind: "safety_stop" }, acksEl, out));
  for (const form of root.querySelectorAll<HTMLFormElement>("form[data-command]")) {
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const body: Record<string, unknown> = { kind: form.dataset.command };
      for (const el of Array.from(form.elements) as HTMLInputElement[]) {
        if (!el.name || el.disabled) continue;
        body[el.name] = el.type === "number" ? Number(el.value) : el.value;
      }
      const moves = form.dataset.moves === "true" || (body.kind === "set_control" && body.law !== "off") || (body.kind === "excitation" && body.waveform !== "off");
      if (moves && !window.confirm(`This makes the structure move: send ${String(body.kind)} to ${rig}?`)) return;
      void send(rig, body, acksEl, out);
    });
  }
}

interface GainLimit {
  floor: number;
  critical_gain_n_s_per_m: number;
  max_fraction_of_critical: number;
  max_gain_n_s_per_m: number;
}

/** The DVF gain limit the rig's twin publishes (in every summary), shown beside the gain and
 * enforced by the input's max before sending (the server enforces it too). */
function showLimit(root: HTMLElement, limit: GainLimit | null, why: string | null): void {
  const el = root.querySelector<HTMLElement>("#critical-gain");
  const input = root.querySelector<HTMLInputElement>("#dvf-gain");
  if (!el) return;
  if (!limit) {
    el.textContent = `no DVF gain limit from the twin: ${why ?? "unknown"}`;
    delete el.dataset.maxGain;
    if (input) input.max = "0";
    return;
  }
  el.textContent = `critical gain ${limit.critical_gain_n_s_per_m.toFixed(2)} N·s/m (floor ${limit.floor}); at most ${limit.max_gain_n_s_per_m.toFixed(2)} N·s/m (${limit.max_fraction_of_critical} of it, the twin's limit)`;
  el.dataset.maxGain = String(limit.max_gain_n_s_per_m);
  if (input) input.max = String(limit.max_gain_n_s_per_m);
}
