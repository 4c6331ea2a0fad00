//! Entry of the live rig page (`/rigs/{rig}`): see `live/rig_page.ts`.
import { startRigPage } from "./live/rig_page";

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("rig-page");
  if (root) startRigPage(root);
});
