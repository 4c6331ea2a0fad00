//! Owns the dark/light choice: `data-theme` on <html> when the user picked one, nothing (the
//! system's `prefers-color-scheme`) otherwise. Plots read the resolved theme from here.
const KEY = "dtop-theme";
type Theme = "dark" | "light";

function saved(): Theme | null {
  try {
    const value = localStorage.getItem(KEY);
    return value === "dark" || value === "light" ? value : null;
  } catch {
    return null;
  }
}

/** The theme in effect: the saved choice, else the system's preference. */
export function currentTheme(): Theme {
  return saved() ?? (window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
}

export function applySavedTheme(): void {
  const theme = saved();
  if (theme) document.documentElement.dataset.theme = theme;
}

export function toggleTheme(): void {
  const next: Theme = currentTheme() === "dark" ? "light" : "dark";
  try {
    localStorage.setItem(KEY, next);
  } catch {
    // Private mode without storage: the choice lasts for this page only.
  }
  document.documentElement.dataset.theme = next;
  window.dispatchEvent(new CustomEvent("dtop-theme", { detail: next }));
}
