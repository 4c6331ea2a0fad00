//! The rig page's live control-based continuation panel: the latest run the twin published on
//! `dtop/v1/twin/{rig}/cbc` (forwarded as `{"type":"cbc","run":{...}}`): its state and reason,
//! its converged points as a table, and the response curve they trace (equivalent forcing
//! against frequency, one dot per point) with its CSV and PNG.
import { drawPlot } from "../shared/plot";
import { text } from "./util";

interface CbcPoint {
  frequency_hz: number;
  target_amplitude_m: number;
  forcing_n: number;
  response_amplitude_m: number;
  invasiveness: number;
  change: number | null;
  iterations: number;
  converged: boolean;
}

interface CbcRun {
  run: number;
  command_id: string;
  issued_by: string;
  state: "running" | "completed" | "stopped";
  reason?: string;
  frequency_hz: number;
  targets_sent: number;
  controller_version?: number;
  config: { frequency_start_hz: number; frequency_end_hz: number; frequency_steps: number; target_amplitude_m: number };
  points: CbcPoint[];
}

/** Shows `run` in `panel` (replacing what was there). */
export function showCbc(panel: HTMLElement, run: CbcRun): void {
  panel.hidden = false;
  panel.replaceChildren();
  panel.append(text("h2", "Live control-based continuation"));
  const c = run.config;
  const doing = run.state === "running"
    ? `running at ${run.frequency_hz.toFixed(3)} Hz (target ${run.targets_sent}${run.controller_version ? `, controller/${run.controller_version}` : ", waiting for the edge"})`
    : run.state;
  const head = text("p", `Run ${run.run} by ${run.issued_by} (${run.command_id}): ${doing}. ` +
    `${c.frequency_steps} frequencies from ${c.frequency_start_hz} to ${c.frequency_end_hz} Hz at a target of ${(c.target_amplitude_m * 1e3).toFixed(3)} mm.` +
    (run.reason ? ` ${run.reason}.` : ""));
  head.id = "cbc-state";
  head.dataset.state = run.state;
  panel.append(head);
  if (run.points.length === 0) return;
  drawPlot(panel, {
    title: "Response curve (live CBC points)",
    id: `cbc-run-${run.run}`,
    xLabel: "frequency (Hz)",
    yLabel: "equivalent forcing F (N)",
    x: run.points.map((p) => p.frequency_hz),
    series: [],
    xy: [{ x: run.points.map((p) => p.frequency_hz), y: run.points.map((p) => p.forcing_n), label: "F (N)" }],
    scatter: true,
  });
  const table = document.createElement("table");
  table.id = "cbc-points";
  const header = ["f (Hz)", "F (N)", "response (mm)", "invasiveness", "iterations", "converged"];
  const thead = document.createElement("thead");
  const hr = document.createElement("tr");
  for (const h of header) hr.append(text("th", h));
  thead.append(hr);
  const tbody = document.createElement("tbody");
  for (const p of run.points) {
    const tr = document.createElement("tr");
    for (const v of [
      p.frequency_hz.toFixed(4),
      p.forcing_n.toFixed(4),
      (p.response_amplitude_m * 1e3).toFixed(4),
      p.invasiveness.toExponential(1),
      String(p.iterations),
      p.converged ? "yes" : "no",
    ]) tr.append(text("td", v));
    tbody.append(tr);
  }
  table.append(thead, tbody);
  panel.append(table);
}
