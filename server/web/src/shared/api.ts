//! Owns calls from page scripts to `/api/v1`: the session cookie authenticates them, the CSRF
//! token from `<meta name="csrf-token">` goes with every state-changing one, and a 401 (session
//! expired) sends the browser to the login page with this page remembered.

/** This session's CSRF token, rendered into the layout. */
export function csrfToken(): string {
  return document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')?.content ?? "";
}

/** Goes to the login page, coming back here afterwards. */
export function toLogin(): void {
  const here = window.location.pathname + window.location.search;
  window.location.assign("/login?next=" + encodeURIComponent(here));
}

/** Fetches `path` on our origin; JSON out, a thrown Error with the server's message on refusal. */
export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const method = (init.method ?? "GET").toUpperCase();
  const headers = new Headers(init.headers);
  if (method !== "GET" && method !== "HEAD") headers.set("X-CSRF-Token", csrfToken());
  const response = await fetch(path, { ...init, headers, credentials: "same-origin" });
  if (response.status === 401) {
    toLogin();
    throw new Error("session expired");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = (await response.json()) as { message?: string };
      if (body.message) message = body.message;
    } catch {
      // Not JSON: keep the status line.
    }
    throw new Error(message);
  }
  return (await response.json()) as T;
}
