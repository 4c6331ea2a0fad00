//! Runs on every page, in <head>: applies the saved theme before the first paint and wires the
//! theme toggle. The theme follows `prefers-color-scheme` until the user picks one, which is
//! kept in localStorage.
import { applySavedTheme, toggleTheme } from "./shared/theme";

applySavedTheme();
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("theme-toggle")?.addEventListener("click", toggleTheme);
});
