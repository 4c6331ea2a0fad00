//! Entry of the rigs overview (`/rigs`): see `live/rigs_page.ts`.
import { startRigsPage } from "./live/rigs_page";

document.addEventListener("DOMContentLoaded", () => {
  const root = document.querySelector<HTMLElement>("main");
  if (root && document.getElementById("rigs-page")) startRigsPage(root);
});
