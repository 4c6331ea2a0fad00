//! Owns drawing a plot with uPlot inside a card with its title, and each plot's exports: the
//! CSV of exactly what is drawn (a blob: link, built when the plot is) and a PNG of the canvas.
//! Colours come from the theme; plots redraw when it changes.
import uPlot from "uplot";

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

export interface Series {
  label: string;
  values: (number | null)[];
  /** Stroke colour; the palette's next when absent. */
  color?: string;
  dash?: number[];
}

export interface PlotSpec {
  title: string;
  /** Also the CSV's file name. */
  id: string;
  xLabel: string;
  yLabel: string;
  x: number[];
  series: Series[];
  logX?: boolean;
  logY?: boolean;
  /** Pairs of series indices (0-based into `series`) whose area between is shaded. */
  bands?: [number, number][];
  /** Draw bars (histograms) instead of lines. */
  bars?: boolean;
  /** Series are y against their own x (Nyquist); `x` is then the first series' x. */
  xy?: { x: number[]; y: number[]; label: string }[];
  /** With `xy`: draw each point as a dot, no line (stabilisation diagrams, CBC points). */
  scatter?: boolean;
}

function themeColor(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

function positiveOrNull(values: (number | null)[], log: boolean): (number | null)[] {
  return log ? values.map((v) => (v !== null && v > 0 && Number.isFinite(v) ? v : null)) : values;
}

/** The CSV of a plot: the x column, then one column per series, numbers as JavaScript prints them. */
export function plotCsv(spec: PlotSpec): string {
  if (spec.xy) {
    const lines = ["curve,x,y"];
    for (const c of spec.xy) c.x.forEach((x, i) => lines.push(`${c.label},${x},${c.y[i]}`));
    return lines.join("\n") + "\n";
  }
  const header = [spec.xLabel, ...spec.series.map((s) => s.label)].map(csvCell).join(",");
  const rows = spec.x.map((x, i) => [x, ...spec.series.map((s) => s.values[i] ?? "")].join(","));
  return [header, ...rows].join("\n") + "\n";
}

function csvCell(text: string): string {
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** Tick labels that stay readable from 1e-9 to 1e9 (uPlot's default rounds small values to 0). */
function tick(v: number | null): string {
  if (v === null || !Number.isFinite(v)) return "";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(1) : String(Number(v.toPrecision(4)));
}

function axis(label: string): uPlot.Axis {
  const grid = themeColor("--grid");
  return {
    label,
    stroke: themeColor("--fg"),
    grid: { stroke: grid },
    ticks: { stroke: grid },
    size: 60,
    values: (_u: uPlot, splits: number[]) => splits.map(tick),
  };
}

/** Draws `spec` into a new card appended to `parent`; returns the card. */
/** A scatter series' paths in uPlot's mode 2: a dot of radius 3 CSS px at every (x, y). */
function dots(u: uPlot, seriesIdx: number): uPlot.Series.Paths | null {
  const [xs, ys] = u.data[seriesIdx] as unknown as [number[], (number | null)[]];
  const path = new Path2D();
  const r = 3 * devicePixelRatio;
  xs.forEach((x, k) => {
    const y = ys[k];
    if (y == null || !Number.isFinite(x) || !Number.isFinite(y)) return;
    const cx = u.valToPos(x, "x", true);
    const cy = u.valToPos(y, "y", true);
    path.moveTo(cx + r, cy);
    path.arc(cx, cy, r, 0, 2 * Math.PI);
  });
  return { stroke: path, fill: path };
}

export function drawPlot(parent: HTMLElement, spec: PlotSpec): HTMLElement {
  const card = document.createElement("section");
  card.className = "plot";
  card.dataset.plot = spec.id;
  const title = document.createElement("h3");
  title.textContent = spec.title;
  const area = document.createElement("div");
  const tools = document.createElement("div");
  tools.className = "tools";
  card.append(title, area, tools);
  parent.append(card);

  const width = Math.max(280, parent.clientWidth - 24);
  const height = Math.round(Math.min(360, Math.max(220, width * 0.45)));
  let plot: uPlot;
  if (spec.xy) {
    const opts: uPlot.Options = {
      mode: 2,
      width,
      height,
      scales: { x: { time: false }, y: {} },
      axes: [axis(spec.xLabel), axis(spec.yLabel)],
      series: [
        {},
        ...spec.xy.map((c, i) => ({
          label: c.label,
          stroke: PALETTE[i % PALETTE.length],
          // uPlot draws no `points` in mode 2 (its point loop runs over the x series' window,
          // which mode 2 has not), so a scatter's dots are its paths.
          paths: spec.scatter ? dots : uPlot.paths.linear!(),
          fill: spec.scatter ? PALETTE[i % PALETTE.length] : undefined,
          points: { show: false },
        })),
      ],
    };
    const data = [null, ...spec.xy.map((c) => [c.x, c.y])] as unknown as uPlot.AlignedData;
    plot = new uPlot(opts, data, area);
  } else {
    const bars = spec.bars ? uPlot.paths.bars!({ size: [0.9, 100] }) : undefined;
    const opts: uPlot.Options = {
      width,
      height,
      scales: {
        x: { time: false, distr: spec.logX ? 3 : 1 },
        y: { distr: spec.logY ? 3 : 1 },
      },
      axes: [axis(spec.xLabel), axis(spec.yLabel)],
      series: [
        { label: spec.xLabel },
        ...spec.series.map((s, i) => ({
          label: s.label,
          stroke: s.color ?? PALETTE[i % PALETTE.length],
          fill: spec.bars ? (s.color ?? PALETTE[i % PALETTE.length]) + "99" : undefined,
          dash: s.dash,
          paths: bars,
          points: { show: false },
          width: 1.5,
        })),
      ],
      bands: spec.bands?.map(([hi, lo]) => ({
        series: [hi + 1, lo + 1] as [number, number],
        fill: "rgba(120,120,120,0.18)",
      })),
    };
    const data = [
      spec.x,
      ...spec.series.map((s) => positiveOrNull(s.values, !!spec.logY)),
    ] as uPlot.AlignedData;
    plot = new uPlot(opts, data, area);
  }

  const csv = document.createElement("a");
  csv.className = "csv";
  csv.textContent = "CSV";
  csv.download = `${spec.id}.csv`;
  csv.href = URL.createObjectURL(new Blob([plotCsv(spec)], { type: "text/csv" }));
  const png = document.createElement("a");
  png.className = "png";
  png.textContent = "PNG";
  png.download = `${spec.id}.png`;
  png.href = "#";
  png.addEventListener("click", (event) => {
    if (png.href.startsWith("blob:")) return;
    event.preventDefault();
    plot.ctx.canvas.toBlob((blob) => {
      if (!blob) return;
      png.href = URL.createObjectURL(blob);
      png.click();
    });
  });
  tools.append(csv, png);
  return card;
}

/** Runs `draw` now and again whenever the theme changes (after clearing `parent`). */
export function drawWithTheme(parent: HTMLElement, draw: () => void): void {
  const redraw = () => {
    parent.querySelectorAll("a.csv").forEach((a) => URL.revokeObjectURL((a as HTMLAnchorElement).href));
    parent.replaceChildren();
    draw();
  };
  draw();
  window.addEventListener("dtop-theme", redraw);
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redraw);
}
