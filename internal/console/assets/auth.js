// Sign-in with the configured OIDC issuer: authorization code with PKCE (RFC 7636, S256), as a public
// client. The access token lives in this module's memory only: never in localStorage or a cookie, so a
// script on another page or a stolen profile cannot take it. Only the short-lived PKCE verifier of a
// sign-in in progress survives the redirect, in sessionStorage, and it is removed as soon as it is used.

const PENDING_KEY = "mxbackups.signin";
// The popup that renews an expired session carries this window name, so the page loaded in it (the
// callback) knows to leave the code to its opener instead of signing in itself.
export const POPUP_NAME = "mxbackups-signin";

let config = null;
let session = null; // {accessToken, expiresAt and obtainedAt (ms), name, subject}

export function setConfig(c) { config = c; }

// The redirect URI to register with the issuer: <console>/callback, whichever console page asks.
export function redirectURI() {
  return new URL("callback", location.href).href;
}

function base64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(n) {
  const bytes = new Uint8Array(n);
  crypto.getRandomValues(bytes);
  return base64url(bytes);
}

async function challengeOf(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

// An authorize request: its URL, and what the token request needs later.
async function newAuthorization() {
  const verifier = randomString(32); // 43 characters
  const state = randomString(16);
  const nonce = randomString(16);
  const u = new URL(config.authorization_endpoint);
  u.searchParams.set("response_type", "code");
  u.searchParams.set("client_id", config.client_id);
  u.searchParams.set("redirect_uri", redirectURI());
  u.searchParams.set("scope", config.scopes);
  u.searchParams.set("state", state);
  u.searchParams.set("nonce", nonce);
  u.searchParams.set("code_challenge", await challengeOf(verifier));
  u.searchParams.set("code_challenge_method", "S256");
  return { url: u.href, verifier, state, nonce };
}

// signInRedirect leaves the page for the issuer; returnTo is the console URL to come back to.
export async function signInRedirect(returnTo) {
  const a = await newAuthorization();
  sessionStorage.setItem(PENDING_KEY, JSON.stringify({ verifier: a.verifier, state: a.state, nonce: a.nonce, returnTo }));
  location.assign(a.url);
}

export class SignInError extends Error {
  constructor(title, detail) { super(detail); this.title = title; this.detail = detail; }
}

// callbackParams returns the code or error the issuer sent back in this page's URL, or null.
export function callbackParams(href = location.href) {
  const u = new URL(href);
  if (!u.pathname.endsWith("/callback")) return null;
  const p = u.searchParams;
  if (!p.has("code") && !p.has("error")) return null;
  return { code: p.get("code"), state: p.get("state"), error: p.get("error"), errorDescription: p.get("error_description") };
}

// completeRedirect finishes a sign-in that signInRedirect started, and returns the URL to go back to.
export async function completeRedirect(params) {
  const raw = sessionStorage.getItem(PENDING_KEY);
  sessionStorage.removeItem(PENDING_KEY);
  const pending = raw ? JSON.parse(raw) : null;
  if (params.error) {
    throw new SignInError("Sign-in failed", params.errorDescription || `The identity provider answered ${params.error}.`);
  }
  if (!pending || pending.state !== params.state) {
    throw new SignInError("Sign-in failed", "This sign-in was not started by this page, or it was already used. Sign in again.");
  }
  await exchange(params.code, pending.verifier, pending.nonce);
  return pending.returnTo || new URL(".", location.href).href;
}

// signInPopup renews the session in a popup window, leaving this page as it is. It must be called from
// a click (browsers block other popups).
export async function signInPopup() {
  const a = await newAuthorization();
  const popup = window.open(a.url, POPUP_NAME, "popup,width=520,height=680");
  if (!popup) throw new SignInError("Sign-in failed", "The browser blocked the sign-in window. Allow popups for this page and try again.");
  const params = await new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      if (popup.closed) {
        clearInterval(timer);
        reject(new SignInError("Sign-in cancelled", "The sign-in window was closed before signing in finished."));
        return;
      }
      let href;
      try { href = popup.location.href; } catch { return; } // still at the issuer, another origin
      const p = callbackParams(href);
      if (p) {
        clearInterval(timer);
        popup.close();
        resolve(p);
      }
    }, 200);
  });
  if (params.error) throw new SignInError("Sign-in failed", params.errorDescription || `The identity provider answered ${params.error}.`);
  if (params.state !== a.state) throw new SignInError("Sign-in failed", "The sign-in window answered for another sign-in. Try again.");
  await exchange(params.code, a.verifier, a.nonce);
}

async function exchange(code, verifier, nonce) {
  const body = new URLSearchParams({
    grant_type: "authorization_code", code, redirect_uri: redirectURI(), client_id: config.client_id, code_verifier: verifier,
  });
  let resp;
  try {
    resp = await fetch(config.token_endpoint, { method: "POST", body, headers: { "Content-Type": "application/x-www-form-urlencoded" } });
  } catch {
    throw new SignInError("Sign-in failed", "The identity provider cannot be reached. Check your connection and try again.");
  }
  let data = {};
  try { data = await resp.json(); } catch { /* described below */ }
  if (!resp.ok || !data.access_token) {
    throw new SignInError("Sign-in failed", data.error_description || `The identity provider refused the sign-in (${data.error || resp.status}).`);
  }
  const claims = decodeClaims(data.id_token) || decodeClaims(data.access_token) || {};
  if (nonce && claims.nonce !== undefined && claims.nonce !== nonce) {
    throw new SignInError("Sign-in failed", "The identity provider's answer does not belong to this sign-in. Sign in again.");
  }
  const lifetime = Number(data.expires_in) > 0 ? Number(data.expires_in) * 1000 : 3600 * 1000;
  session = {
    accessToken: data.access_token,
    // Renew a little early, so that a request never leaves with a token about to expire.
    expiresAt: Date.now() + lifetime - 5000,
    obtainedAt: Date.now(),
    name: claims.name || claims.preferred_username || claims.sub || "",
    subject: claims.oid || claims.sub || "",
  };
}

// decodeClaims reads a JWT's payload for display; the API, not the page, verifies tokens.
function decodeClaims(jwt) {
  if (!jwt || jwt.split(".").length !== 3) return null;
  try {
    const b64 = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(Array.from(atob(b64), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""));
    return JSON.parse(json);
  } catch {
    return null;
  }
}

export function currentSession() { return session; }
export function hasValidToken() { return session !== null && Date.now() < session.expiresAt; }
// isFreshToken: the token came from the issuer moments ago, so a refusal of it is no expiry.
export function isFreshToken() { return session !== null && Date.now() - session.obtainedAt < 60 * 1000; }
export function accessToken() { return session ? session.accessToken : ""; }
export function expireSession() { if (session) session.expiresAt = 0; }
export function signOut() { session = null; }
