// The console's page: sign-in, the environment picker, the namespace switch, the snapshot list with
// its More Options, restores, the activity log and the environments' next automatic backups. It keeps
// polling while something runs, updating rows in place so that open menus and dialogs stay open.
import * as auth from "./auth.js";
import { api, configure, envPath, nsPath, ApiError } from "./api.js";
import {
  h, clear, formatTime, formatBytes, badge, progressElement, problemBox, toast, initDialog, menuButton, isMenuOpen, capitalize,
  openDialog, closeDialog, closeButton,
} from "./ui.js";
import { createBackup, showDetails, deleteSnapshot, restoreSnapshot, downloadSnapshot, uploadBackup, undoRestore } from "./actions.js";

const view = () => document.getElementById("view");
const PAGE = 20;
// While something runs the page polls every 2 s; otherwise once a minute, to show what others (the
// schedule, colleagues) did, and not at all while the tab is hidden.
const POLL_MS = 2000;
const IDLE_POLL_MS = 60 * 1000;

const state = {
  ns: "",
  envs: [],
  envId: "",
  settings: null,
  snapshots: [],
  snapshotTotal: 0,
  limit: PAGE,
  restores: [],
  activity: [],
  pollTimer: null,
  refreshes: 0, // how many refreshes started: the newest one's number
  loadError: null,
};

function currentEnv() { return state.envs.find((e) => e.environment_id === state.envId) || null; }

// ---- boot ----

async function boot() {
  initDialog();
  document.getElementById("session-sign-in").addEventListener("click", renewFromDialog);
  // Escape would close the dialog and leave the waiting calls stuck: only signing in closes it.
  document.getElementById("session-dialog").addEventListener("cancel", (e) => e.preventDefault());
  document.getElementById("sign-out").addEventListener("click", () => { auth.signOut(); showSignedOut(); });
  // Back to a hidden tab: show what changed meanwhile (polling stopped while it was hidden).
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && document.getElementById("snapshots") && !state.pollTimer) refresh();
  });
  if (window.name === auth.POPUP_NAME && auth.callbackParams()) {
    // A renewal popup back from the issuer: its opener reads the code from this URL and closes it.
    clear(view(), h("p", {}, "Signing you in…"));
    return;
  }
  let config;
  try {
    const resp = await fetch("config.json", { headers: { Accept: "application/json" } });
    config = await resp.json();
  } catch {
    return showMessage("The console cannot start", "Its settings could not be loaded from the service. Reload the page in a moment.");
  }
  if (config.problem) return showMessage("Signing in is not possible", config.problem);
  auth.setConfig(config);
  configure(config.api, renewSession);

  const params = auth.callbackParams();
  if (params) {
    try {
      const back = await auth.completeRedirect(params);
      history.replaceState(null, "", back);
    } catch (err) {
      history.replaceState(null, "", new URL(".", location.href).href);
      return showSignInProblem(err);
    }
  }
  const url = new URL(location.href);
  state.ns = url.searchParams.get("namespace") || config.default_namespace || "";
  state.envId = url.searchParams.get("environment") || "";
  if (!auth.hasValidToken()) {
    return auth.signInRedirect(location.href);
  }
  showUser();
  if (!state.ns) return showNamespaceForm();
  await loadNamespace();
}

function showUser() {
  const s = auth.currentSession();
  document.getElementById("user-name").textContent = s && s.name ? `Signed in as ${s.name}` : "";
  document.getElementById("sign-out").hidden = !s;
}

function showMessage(title, detail, ...extra) {
  stopPolling();
  clear(view(), h("section", { class: "card page-message" }, h("h2", {}, title), h("p", {}, detail), ...extra));
}

function showSignInProblem(err) {
  showMessage(err.title || "Sign-in failed", err.detail || err.message,
    h("button", { type: "button", class: "primary", onclick: () => auth.signInRedirect(new URL(".", location.href).href) }, "Sign in"));
}

function showSignedOut() {
  showUser();
  showMessage("You are signed out", "Sign in to see and manage the backups of your environments.",
    h("button", { type: "button", class: "primary", onclick: () => auth.signInRedirect(location.href) }, "Sign in"));
}

function showNamespaceForm() {
  const input = h("input", { type: "text", id: "namespace", name: "namespace", required: true, autocomplete: "off", placeholder: "e.g. my-team" });
  const form = h("form", {
    class: "row",
    onsubmit: (e) => {
      e.preventDefault();
      const u = new URL(location.href);
      u.searchParams.set("namespace", input.value.trim());
      location.assign(u.href);
    },
  }, h("label", { for: "namespace" }, "Namespace"), input, h("button", { type: "submit", class: "primary" }, "Open"));
  showMessage("Choose a namespace", "The backups you can manage are listed per namespace.", form);
}

// ---- the session ----

let renewal = null;
let renewalResolve = null;

// renewSession is what API calls wait on while the session is expired: the session dialog asks the
// user to sign in again (in a popup), and every waiting call goes on once that worked.
function renewSession() {
  if (!renewal) {
    renewal = new Promise((resolve) => { renewalResolve = resolve; });
    const d = document.getElementById("session-dialog");
    document.getElementById("session-error").hidden = true;
    if (!d.open) d.showModal();
  }
  return renewal;
}

async function renewFromDialog() {
  const errBox = document.getElementById("session-error");
  try {
    await auth.signInPopup();
  } catch (err) {
    errBox.textContent = err.detail || err.message;
    errBox.hidden = false;
    return;
  }
  document.getElementById("session-dialog").close();
  showUser();
  const resolve = renewalResolve;
  renewal = null;
  renewalResolve = null;
  resolve();
}

// ---- loading ----

async function loadNamespace() {
  try {
    const [envs, settings] = await Promise.all([
      api("GET", `${nsPath(state.ns)}/environments`),
      api("GET", `${nsPath(state.ns)}/settings`),
    ]);
    state.envs = envs.environments;
    state.settings = settings;
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) return showNoAccess(err);
    if (err instanceof ApiError && err.code === "INVALID_PARAMETERS") return showMessage("No such namespace", err.detail);
    return showMessage(err.title || "The backups cannot be shown", err.detail || err.message,
      h("button", { type: "button", onclick: () => loadNamespace() }, "Try again"));
  }
  if (!state.envs.some((e) => e.environment_id === state.envId)) {
    state.envId = state.envs.length ? state.envs[0].environment_id : "";
  }
  renderPage();
  await refresh();
}

function showNoAccess(err) {
  clear(view(), h("section", { class: "card page-message", id: "no-access" },
    h("h2", {}, "No access"),
    h("p", {}, `You cannot see or manage the backups of namespace ${state.ns}.`),
    h("p", { class: "muted" }, err.detail),
    h("p", {}, "Ask an administrator of the namespace for the Manage Apps Backups permission (and Stop Apps to restore), then reload this page."),
    h("button", { type: "button", onclick: () => auth.signInRedirect(location.href) }, "Sign in as another user")));
}

// refresh reloads what the page shows for the chosen environment, then polls again while anything of it
// runs.
async function refresh() {
  stopPolling();
  // Refreshes overlap (a poll, an action's own refresh): only the newest one may write the state and
  // poll on, so answers never arrive out of order and there is one polling loop.
  const generation = ++state.refreshes;
  const env = currentEnv();
  if (!env) return;
  const p = envPath(state.ns, env.environment_id);
  try {
    const [envs, settings, snaps, restores, activity] = await Promise.all([
      api("GET", `${nsPath(state.ns)}/environments`),
      api("GET", `${nsPath(state.ns)}/settings`),
      api("GET", `${p}/snapshots?limit=${state.limit}`),
      api("GET", `${p}/restores?limit=10`),
      api("GET", `${p}/activity?limit=20`),
    ]);
    if (generation !== state.refreshes) return; // a newer refresh (or another environment) took over
    state.envs = envs.environments;
    state.settings = settings;
    state.snapshots = snaps.snapshots;
    state.snapshotTotal = snaps.total;
    state.restores = restores.restores;
    state.activity = activity.entries;
    state.loadError = null;
  } catch (err) {
    if (generation !== state.refreshes) return;
    if (err instanceof ApiError && err.status === 403) return showNoAccess(err);
    state.loadError = err;
  }
  update();
  const running = state.snapshots.some((s) => s.status === "Processing") ||
    state.restores.some((r) => r.state === "queued" || r.state === "running" || r.undo_state === "queued" || r.undo_state === "running") ||
    state.loadError !== null;
  if (running) state.pollTimer = setTimeout(refresh, POLL_MS);
  else if (!document.hidden) state.pollTimer = setTimeout(refresh, IDLE_POLL_MS);
}

function stopPolling() {
  if (state.pollTimer) clearTimeout(state.pollTimer);
  state.pollTimer = null;
}

function actionContext() {
  return { ns: state.ns, envs: () => state.envs, env: currentEnv, refresh, session: auth.currentSession };
}

// ---- rendering ----

function renderPage() {
  const select = h("select", { id: "environment", name: "environment" });
  for (const e of state.envs) select.append(h("option", { value: e.environment_id }, `${e.name} (${e.state})`));
  select.value = state.envId;
  select.addEventListener("change", () => {
    state.envId = select.value;
    state.limit = PAGE;
    const u = new URL(location.href);
    u.searchParams.set("namespace", state.ns);
    u.searchParams.set("environment", state.envId);
    history.replaceState(null, "", u.href);
    state.snapshots = [];
    state.restores = [];
    state.activity = [];
    update();
    refresh();
  });
  const toggle = h("input", { type: "checkbox", role: "switch", id: "backups-enabled" });
  toggle.addEventListener("change", () => setBackupsEnabled(toggle));

  clear(view(),
    state.envs.length === 0 ? h("section", { class: "card" }, h("p", {}, `Namespace ${state.ns} has no environments yet.`)) : null,
    h("section", { class: "card", id: "environment-bar" },
      h("div", { class: "row" },
        h("label", { for: "environment" }, "Environment"), select,
        h("span", { class: "spacer" }),
        h("label", { class: "switch", for: "backups-enabled" }, toggle, "Try new Backup and Restore")),
      h("p", { class: "muted", id: "environment-summary" })),
    h("section", { class: "card", id: "enable-backups", hidden: true },
      h("h2", {}, "Try new Backup and Restore"),
      h("p", {}, `Backups are off for namespace ${state.ns}. Turn them on to create backups on demand, get nightly, weekly and monthly backups automatically, and restore, download and upload snapshots.`),
      h("button", { type: "button", class: "primary", id: "enable-backups-button", onclick: () => setBackupsEnabled(null, true) }, "Turn on backups")),
    h("div", { id: "load-error" }),
    h("section", { class: "card", id: "snapshots-card" },
      h("div", { class: "row" },
        h("h2", {}, "Backups"), h("span", { class: "spacer" }),
        h("button", { type: "button", class: "primary", id: "create-backup", "aria-describedby": "create-reason", onclick: () => createBackup(actionContext()) }, "Create Backup"),
        h("button", { type: "button", id: "upload-backup", onclick: () => uploadBackup(actionContext()) }, "Upload Backup")),
      h("p", { class: "muted", id: "create-reason" }),
      h("table", { class: "responsive", id: "snapshots" },
        h("thead", {}, h("tr", {}, ["Created on", "Kind", "Comment", "Status", "Size", "Expires on", "Options"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {})),
      h("p", { class: "muted", id: "snapshots-empty", hidden: true }, "There are no backups of this environment yet."),
      h("div", { class: "pager" }, h("button", { type: "button", id: "more-snapshots", hidden: true, onclick: () => { state.limit += PAGE; refresh(); } }, "Show more backups"))),
    h("section", { class: "card", id: "restores-card" },
      h("h2", {}, "Restores into this environment"),
      h("table", { class: "responsive", id: "restores" },
        h("thead", {}, h("tr", {}, ["Started", "Snapshot", "State", "Details", "Undo"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {})),
      h("p", { class: "muted", id: "restores-empty" }, "Nothing was restored into this environment yet.")),
    h("section", { class: "card", id: "activity-card" },
      h("h2", {}, "Activity log"),
      h("table", { class: "responsive", id: "activity" },
        h("thead", {}, h("tr", {}, ["Time", "Action", "Status", "By", "Message"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {})),
      h("p", { class: "muted", id: "activity-empty" }, "Nothing happened to this environment yet.")),
    h("section", { class: "card", id: "environments-card" },
      h("h2", {}, "Environments"),
      h("table", { class: "responsive", id: "environments" },
        h("thead", {}, h("tr", {}, ["Environment", "State", "Model version", "Last backup", "Next automatic backup"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}))));
  update();
}

function update() {
  const env = currentEnv();
  const enabled = !!(state.settings && state.settings.backups_enabled);
  const toggle = document.getElementById("backups-enabled");
  if (!toggle) return;
  toggle.checked = enabled;
  document.getElementById("enable-backups").hidden = enabled;
  document.getElementById("snapshots-card").hidden = !env;
  document.getElementById("restores-card").hidden = !env;
  document.getElementById("activity-card").hidden = !env;
  for (const opt of document.getElementById("environment").options) {
    const e = state.envs.find((x) => x.environment_id === opt.value);
    if (e) opt.textContent = `${e.name} (${e.state})`;
  }
  clear(document.getElementById("load-error"), state.loadError ? problemBox(state.loadError) : null);
  if (!env) return;

  clear(document.getElementById("environment-summary"),
    `${env.state}${env.deployed ? ` · ${env.deployment_package || "no package"} · model ${env.model_version || "unknown"}` : " · nothing deployed"}` +
    ` · next automatic backup: ${nextBackupText(env)}`);
  const create = document.getElementById("create-backup");
  create.disabled = !env.can_create_backup;
  document.getElementById("create-reason").textContent = env.can_create_backup ? "" : `You cannot create a backup now: ${env.reason}.`;
  document.getElementById("upload-backup").disabled = !enabled;

  updateSnapshots();
  updateRestores();
  updateActivity();
  updateEnvironments();
}

function nextBackupText(env) {
  const n = env.next_automatic_backup;
  return n ? `${capitalize(n.kind)}, ${formatTime(n.at)}` : "none";
}

function cell(label, ...content) { return h("td", { "data-label": label }, ...content); }

// updateSnapshots keeps one row per snapshot, replacing only the cells that show data, so that an open
// More Options menu survives a poll.
function updateSnapshots() {
  const body = document.querySelector("#snapshots tbody");
  const rows = new Map([...body.children].map((tr) => [tr.dataset.snapshotId, tr]));
  const wanted = new Set(state.snapshots.map((s) => s.snapshot_id));
  for (const [id, tr] of rows) if (!wanted.has(id)) tr.remove();
  let previous = null;
  for (const s of state.snapshots) {
    let tr = rows.get(s.snapshot_id);
    if (!tr || !tr.isConnected) {
      tr = h("tr", { dataset: { snapshotId: s.snapshot_id } });
      for (let i = 0; i < 7; i++) tr.append(h("td"));
    }
    const cells = snapshotCells(s);
    const sig = JSON.stringify([s.status, s.progress, s.comment, s.size_bytes, s.expires_at]);
    if (tr.dataset.sig !== sig) {
      cells.forEach((c, i) => tr.children[i].replaceWith(c));
      tr.dataset.sig = sig;
      tr.dataset.status = s.status;
    }
    if (!isMenuOpen() || !tr.contains(document.activeElement)) {
      const options = h("td", { "data-label": "Options" }, snapshotMenu(s));
      if (tr.dataset.menuSig !== s.status) { tr.children[6].replaceWith(options); tr.dataset.menuSig = s.status; }
    }
    const expectedPrev = previous ? previous.nextElementSibling : body.firstElementChild;
    if (expectedPrev !== tr) {
      if (previous) previous.after(tr); else body.prepend(tr);
    }
    previous = tr;
  }
  document.getElementById("snapshots-empty").hidden = state.snapshots.length > 0;
  document.getElementById("more-snapshots").hidden = state.snapshots.length >= state.snapshotTotal;
}

function snapshotCells(s) {
  const status = [badge(s.status)];
  if (s.status === "Processing") status.push(progressElement(s.progress, `Progress of the backup of ${formatTime(s.created_at)}`));
  if (s.status === "Failed" && s.status_message) status.push(h("span", { class: "progress-text" }, s.status_message));
  return [
    cell("Created on", formatTime(s.created_at)),
    cell("Kind", capitalize(s.kind)),
    h("td", { "data-label": "Comment", class: "comment" }, s.comment || "—"),
    cell("Status", ...status),
    cell("Size", s.status === "Finished" ? formatBytes(s.size_bytes) : "—"),
    cell("Expires on", formatTime(s.expires_at)),
  ];
}

function snapshotMenu(s) {
  const ctx = actionContext();
  const finished = s.status === "Finished";
  return menuButton("More Options", `More options for the backup of ${formatTime(s.created_at)}`, [
    { label: "Details", onSelect: () => showDetails(ctx, s.snapshot_id) },
    { label: "Restore", disabled: !finished, onSelect: () => restoreSnapshot(ctx, s) },
    { label: "Download", disabled: !finished, onSelect: () => downloadSnapshot(ctx, s) },
    { label: "Delete", disabled: s.status === "Processing", onSelect: () => deleteSnapshot(ctx, s) },
  ]);
}

function updateRestores() {
  const body = document.querySelector("#restores tbody");
  clear(body, state.restores.map((r) => {
    const source = state.envs.find((e) => e.environment_id === r.source_environment_id);
    let stateCell = [badge(r.state)];
    if (r.state === "queued" || r.state === "running") stateCell.push(progressElement(r.progress, "Progress of the restore"));
    let details = r.status_message || "";
    if (r.state === "completed") details = r.undone_at ? `Undone on ${formatTime(r.undone_at)}` : `Undo possible until ${formatTime(r.undo_until)}`;
    if (r.undo_state === "queued" || r.undo_state === "running") {
      stateCell = [badge(r.undo_state), h("span", { class: "progress-text" }, "Undoing"), progressElement(r.progress, "Progress of the undo")];
    } else if (r.undo_state === "failed") {
      details = `The undo failed: ${r.undo_status_message}`;
    }
    return h("tr", { dataset: { restoreId: r.restore_id, state: r.state, undoState: r.undo_state || "" } },
      cell("Started", formatTime(r.created_at)),
      cell("Snapshot", `${source ? source.name : "another environment"} · ${r.source_snapshot_id.slice(-8)}`),
      cell("State", ...stateCell),
      cell("Details", details, r.warnings.length ? h("span", { class: "progress-text warning" }, r.warnings.join(" ")) : null),
      cell("Undo", r.undo_available
        ? h("button", { type: "button", "aria-label": `Undo the restore of ${formatTime(r.created_at)}`, onclick: () => undoRestore(actionContext(), r) }, "Undo")
        : "—"));
  }));
  document.getElementById("restores-empty").hidden = state.restores.length > 0;
}

function updateActivity() {
  const me = auth.currentSession();
  clear(document.querySelector("#activity tbody"), state.activity.map((a) => h("tr", {},
    cell("Time", formatTime(a.time)),
    cell("Action", capitalize(a.action)),
    cell("Status", badge(a.status)),
    cell("By", me && a.actor === me.subject ? "you" : a.actor),
    cell("Message", a.message || "—"))));
  document.getElementById("activity-empty").hidden = state.activity.length > 0;
}

function updateEnvironments() {
  clear(document.querySelector("#environments tbody"), state.envs.map((e) => h("tr", {},
    cell("Environment", e.name),
    cell("State", e.state),
    cell("Model version", e.model_version || "—"),
    cell("Last backup", formatTime(e.last_finished_snapshot_at)),
    cell("Next automatic backup", nextBackupText(e)))));
}

// setBackupsEnabled turns the namespace's "Try new Backup and Restore" on at once, and off after a
// confirmation in the dialog (the switch stays on until then).
function setBackupsEnabled(toggle, value) {
  const enabled = toggle ? toggle.checked : value;
  if (enabled) return saveBackupsEnabled(true);
  toggle.checked = true;
  const turnOff = h("button", { type: "button", class: "danger primary", id: "backups-off-confirm" }, "Turn backups off");
  const errors = h("div");
  openDialog("Turn backups off", [
    h("p", {}, `Turn backups off for namespace ${state.ns}? While they are off, no automatic backups are made and nobody can create, restore, download or upload backups. The existing backups are kept and still expire on their dates.`),
    errors,
  ], [closeButton("Cancel"), turnOff]);
  turnOff.addEventListener("click", async () => {
    turnOff.disabled = true;
    try {
      await saveBackupsEnabled(false, true);
      closeDialog();
    } catch (err) {
      clear(errors, problemBox(err));
      turnOff.disabled = false;
    }
  });
}

async function saveBackupsEnabled(enabled, throwErrors = false) {
  try {
    state.settings = await api("PUT", `${nsPath(state.ns)}/settings`, { backups_enabled: enabled });
    toast(enabled ? `Backups are on for namespace ${state.ns}.` : `Backups are off for namespace ${state.ns}.`);
  } catch (err) {
    if (throwErrors) throw err;
    state.loadError = err;
  }
  await refresh();
}

boot().catch((err) => showMessage("Something went wrong", err && err.message ? err.message : String(err)));
