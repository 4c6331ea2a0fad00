//! The rigs overview (`/rigs`): one WebSocket to `/ws/rigs` brings every visible rig's summary
//! each second; one table row per rig, "stale" when a rig's data stops or the feed drops, and
//! the feed reconnects by itself.

import { hhmmss } from "./util";

const FIELDS = [
  "online", "sample_rate_hz", "data_age_s", "blocks_stored", "blocks_missing",
  "blocks_declared_lost", "backlog_s", "safety_state", "controller_running",
];

export function startRigsPage(root: HTMLElement): void {
  const body = root.querySelector<HTMLElement>("#rigs-body") as HTMLElement;
  const staleEl = root.querySelector<HTMLElement>("#stale");
  let last = Date.now();
  let backoffMs = 500;
  // How often the feed opened and how many summaries came (read by the browser tests, which
  // need to know the feed is live before they can say a rig is absent from it).
  const feed = { opened: 0, messages: 0 };
  (window as unknown as { dtopRigs: unknown }).dtopRigs = feed;

  function row(rig: string): HTMLTableRowElement {
    let tr = body.querySelector<HTMLTableRowElement>(`tr[data-rig="${CSS.escape(rig)}"]`);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.rig = rig;
      const name = document.createElement("td");
      const a = document.createElement("a");
      a.href = `/rigs/${encodeURIComponent(rig)}`;
      a.textContent = rig;
      name.append(a);
      tr.append(name, ...FIELDS.map((f) => {
        const td = document.createElement("td");
        td.dataset.field = f;
        return td;
      }));
      body.append(tr);
      root.querySelector("#no-rigs")?.remove();
    }
    return tr;
  }

  function connect(): void {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws/rigs`);
    ws.onopen = () => { backoffMs = 500; feed.opened++; };
    ws.onmessage = (ev: MessageEvent) => {
      last = Date.now();
      feed.messages++;
      if (staleEl) staleEl.hidden = true;
      const s = JSON.parse(String(ev.data)) as Record<string, unknown>;
      if (s.type !== "status") return;
      const tr = row(String(s.rig));
      tr.classList.toggle("offline", s.online !== true);
      tr.classList.toggle("stale", s.stale_since_ns !== null);
      for (const td of tr.querySelectorAll<HTMLElement>("td[data-field]")) {
        const v = s[td.dataset.field as string];
        td.textContent = v === null || v === undefined ? "–" : typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : String(v);
      }
      if (typeof s.stale_since_ns === "number") {
        const age = tr.querySelector<HTMLElement>('td[data-field="data_age_s"]');
        if (age) age.textContent = `stale since ${hhmmss(s.stale_since_ns / 1e6)}`;
      }
    };
    ws.onclose = () => {
      if (staleEl) {
        staleEl.hidden = false;
        staleEl.textContent = `stale since ${hhmmss(last)}`;
      }
      setTimeout(connect, backoffMs * (0.5 + Math.random()));
      backoffMs = Math.min(backoffMs * 2, 15000);
    };
  }
  connect();
}
