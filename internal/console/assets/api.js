// Calls to the service's API with the user's bearer token. Every failure becomes an ApiError with a
// title and a sentence (the problem+json's own, when the API sent one), never raw JSON. A call made with
// an expired session waits until the user has signed in again (renewSession), then goes on.
import { accessToken, hasValidToken, isFreshToken, expireSession } from "./auth.js";

let base = "/api/v1";
let renew = async () => { throw new ApiError(401, "Your session has expired", "Sign in again to go on."); };

export function configure(apiBase, renewSession) {
  base = apiBase;
  renew = renewSession;
}

export class ApiError extends Error {
  constructor(status, title, detail, code = "") {
    super(detail);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.code = code;
  }
}

// api calls method on path (under /api/v1) with an optional JSON body and returns the decoded answer
// (null for 204).
export async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    if (!hasValidToken()) await renew();
    const resp = await send(method, path, body);
    if (resp.status === 401 && (attempt > 0 || isFreshToken())) {
      // A token just issued and refused is no expired session: signing in again would get the same.
      // The service's problem says why (often "token audience does not match").
      const err = await decode(resp).catch((e) => e);
      throw new ApiError(401, "The service does not accept your sign-in",
        `${sentence(err.detail || err.message)} The identity provider issued a token this service refuses: ask its operator to check the console's CONSOLE_SCOPES and the service's AUTH_AUDIENCE.`, err.code || "");
    }
    if (resp.status === 401) {
      // The token expired (or was revoked) between the check above and the call.
      expireSession();
      continue;
    }
    return decode(resp);
  }
}

async function send(method, path, body) {
  const headers = { Authorization: "Bearer " + accessToken(), Accept: "application/json" };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(base + path, init);
  } catch {
    throw new ApiError(0, "The service cannot be reached", "Check your connection and try again.");
  }
}

async function decode(resp) {
  if (resp.status === 204) return null;
  const type = resp.headers.get("Content-Type") || "";
  let data = null;
  if (type.includes("json")) {
    try { data = await resp.json(); } catch { data = null; }
  }
  if (resp.ok) {
    if (data === null) throw new ApiError(resp.status, "Unexpected answer", "The service sent an answer this page cannot read.");
    return data;
  }
  if (data && typeof data.title === "string") {
    throw new ApiError(resp.status, data.title, data.detail || data.title, data.code || "");
  }
  throw new ApiError(resp.status, "Request failed", `The service answered with status ${resp.status}. Try again in a moment.`);
}

// sentence capitalises text and ends it with a full stop, to be followed by another sentence.
function sentence(text) {
  const t = String(text || "").trim().replace(/\.+$/, "");
  return t ? t[0].toUpperCase() + t.slice(1) + "." : "";
}

// Paths of the API, with every part escaped.
export function nsPath(ns) { return `/namespaces/${encodeURIComponent(ns)}`; }
export function envPath(ns, env) { return `${nsPath(ns)}/environments/${encodeURIComponent(env)}`; }
