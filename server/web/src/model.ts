//! Model pages: draws the receptance FRF magnitudes the server computed (one model, or two
//! overlaid for a comparison) from the `data-frf-*` attributes of `#frf-plots`.
import { drawPlot, drawWithTheme, type Series } from "./shared/plot";

/** B's curves get their own colours so the overlay reads at a glance. */
const PALETTE_B = ["#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];

interface Frf {
  frequency_hz: number[];
  series: { name: string; values: number[] }[];
}

function main(): void {
  const host = document.getElementById("frf-plots");
  if (!host) return;
  const a = JSON.parse(host.dataset.frfA ?? "null") as Frf | null;
  const b = JSON.parse(host.dataset.frfB ?? "null") as Frf | null;
  if (!a) return;
  const labelA = host.dataset.labelA ?? "A";
  const labelB = host.dataset.labelB ?? "B";
  drawWithTheme(host, () => {
    const series: Series[] = a.series.map((s) => ({ label: `${labelA} ${s.name}`, values: s.values }));
    if (b) {
      // The comparison draws both on one grid; B is dashed.
      b.series.forEach((s, i) =>
        series.push({ label: `${labelB} ${s.name}`, values: s.values, dash: [6, 4], color: PALETTE_B[i % PALETTE_B.length] }),
      );
    }
    drawPlot(host, {
      title: b ? `Receptance magnitude: ${labelA} (solid) vs ${labelB} (dashed)` : `Receptance magnitude: ${labelA}`,
      id: b ? "frf-overlay" : "frf",
      xLabel: "frequency_hz",
      yLabel: "m/N",
      x: a.frequency_hz,
      series,
      logX: true,
      logY: true,
    });
  });
}

document.addEventListener("DOMContentLoaded", main);
