// The console's actions, each in the one dialog: Create Backup, Details, Delete, Restore (and Undo),
// Download and Upload Backup. ctx is {ns, envs(), env(), refresh(), session()} from app.js.
import { api, envPath } from "./api.js";
import {
  h, clear, formatTime, formatBytes, formatCount, badge, progressElement, problemBox, toast, openDialog, closeDialog,
  closeButton, capitalize, sleep,
} from "./ui.js";
import { uploadFile } from "./upload.js";

const POLL_MS = 1500;

function errorArea() { return h("div", { class: "dialog-error" }); }
function showError(area, err) { clear(area, problemBox(err)); }

// busy disables a button while f runs; f's error is shown in area.
async function busy(button, area, f) {
  button.disabled = true;
  clear(area);
  try {
    await f();
  } catch (err) {
    showError(area, err);
  } finally {
    button.disabled = false;
  }
}

// ---- Create Backup ----

export function createBackup(ctx) {
  const env = ctx.env();
  const comment = h("textarea", { id: "backup-comment", name: "comment", maxlength: 1000 });
  const errors = errorArea();
  const create = h("button", { type: "button", class: "primary", id: "create-backup-confirm" }, "Create Backup");
  openDialog("Create Backup", [
    h("p", {}, `A backup of ${env.name} holds its database and its file documents. It is kept 14 days.`),
    h("div", { class: "field" }, h("label", { for: "backup-comment" }, "Comment"), comment),
    errors,
  ], [closeButton("Cancel"), create]);
  create.addEventListener("click", () => busy(create, errors, async () => {
    await api("POST", `${envPath(ctx.ns, env.environment_id)}/snapshots`, { comment: comment.value });
    closeDialog();
    toast("The backup has started.");
    await ctx.refresh();
  }));
}

// ---- Details ----

export async function showDetails(ctx, snapshotId) {
  const env = ctx.env();
  const d = openDialog("Backup details", h("p", {}, "Loading…"), [closeButton()]);
  let s;
  try {
    s = await api("GET", `${envPath(ctx.ns, env.environment_id)}/snapshots/${encodeURIComponent(snapshotId)}`);
  } catch (err) {
    d.setBody(problemBox(err));
    return;
  }
  const rows = [
    ["Status", badge(s.status)],
    ["Snapshot ID", s.snapshot_id],
    ["Created on", formatTime(s.created_at)],
    ["Deployment package", s.deployment_package || "—"],
    ["Model version", s.model_version || "—"],
    ["Comment", s.comment || "—"],
    ["Kind", capitalize(s.kind)],
    ["Expires at", formatTime(s.expires_at)],
    ["Finished on", formatTime(s.finished_at)],
    ["Size", formatBytes(s.size_bytes)],
    ["Database size", formatBytes(s.database_size_bytes)],
    ["Database dump", formatBytes(s.dump_size_bytes)],
    ["Files", `${formatCount(s.files_count)} (${formatBytes(s.files_bytes)})`],
    ["New files stored", `${formatCount(s.new_files_count)} (${formatBytes(s.new_files_bytes)})`],
    ["Storage used", formatBytes(s.stored_bytes)],
    ["SHA-256", s.sha256 || "—"],
  ];
  if (s.upload_sha256) rows.push(["SHA-256 as uploaded", s.upload_sha256]);
  if (s.status_message) rows.push(["Status message", s.status_message]);
  rows.push(["Warnings", s.warnings.length ? h("ul", {}, s.warnings.map((w) => h("li", {}, w))) : "None"]);
  d.setBody(h("dl", { class: "details", id: "snapshot-details" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
}

// ---- Delete ----

export function deleteSnapshot(ctx, s) {
  const env = ctx.env();
  const errors = errorArea();
  const del = h("button", { type: "button", class: "danger primary", id: "delete-confirm" }, "Delete");
  openDialog("Delete backup", [
    h("p", {}, `Delete the ${s.kind} backup of ${formatTime(s.created_at)}${s.comment ? ` ("${s.comment}")` : ""}? It cannot be restored or downloaded afterwards, and this cannot be undone.`),
    errors,
  ], [closeButton("Cancel"), del]);
  del.addEventListener("click", () => busy(del, errors, async () => {
    await api("DELETE", `${envPath(ctx.ns, env.environment_id)}/snapshots/${encodeURIComponent(s.snapshot_id)}`);
    closeDialog();
    toast("The backup was deleted.");
    await ctx.refresh();
  }));
}

// ---- Restore and Undo ----

export function restoreSnapshot(ctx, s) {
  const source = ctx.env();
  const select = h("select", { id: "restore-target", name: "target" });
  for (const e of ctx.envs()) select.append(h("option", { value: e.environment_id }, `${e.name} (${e.state})`));
  select.value = source.environment_id;
  const notes = h("div", { id: "restore-notes" });
  const errors = errorArea();
  const start = h("button", { type: "button", class: "primary", id: "restore-confirm" }, "Restore");
  const describe = () => {
    const target = ctx.envs().find((e) => e.environment_id === select.value);
    const items = [h("p", { class: "notice info" },
      `Stop the app in ${target.name} before restoring: a restore replaces its database and its file documents. If it fails, ${target.name} stays exactly as it was.`)];
    if (target.state !== "Stopped") {
      items.push(h("p", { class: "notice bad" }, `${target.name} is ${target.state}. Stop the app first; the restore is refused while it runs.`));
    }
    if ((s.model_version || "") !== (target.model_version || "")) {
      items.push(h("p", { class: "notice", id: "model-warning" },
        `The backup was made with model version ${s.model_version || "unknown"} and ${target.name} runs ${target.model_version || "an unknown version"}. ` +
        `Deploy the matching model (${s.deployment_package || "its deployment package"}) after the restore, before starting the app.`));
    }
    clear(notes, items);
  };
  select.addEventListener("change", describe);
  const d = openDialog("Restore backup", [
    h("p", {}, `Restore the ${s.kind} backup of ${formatTime(s.created_at)} from ${source.name}.`),
    h("div", { class: "field" }, h("label", { for: "restore-target" }, "Destination environment"), select),
    notes, errors,
  ], [closeButton("Cancel"), start]);
  describe();
  start.addEventListener("click", () => busy(start, errors, async () => {
    const r = await api("POST", `${envPath(ctx.ns, select.value)}/restores`,
      { source_snapshot_id: s.snapshot_id, source_environment_id: source.environment_id });
    ctx.refresh();
    await followRestore(ctx, d, select.value, r, false);
  }));
}

export function undoRestore(ctx, r) {
  const target = ctx.envs().find((e) => e.environment_id === r.target_environment_id) || ctx.env();
  const errors = errorArea();
  const undo = h("button", { type: "button", class: "primary", id: "undo-confirm" }, "Undo restore");
  const d = openDialog("Undo restore", [
    h("p", {}, `Put ${target.name} back as it was before the restore of ${formatTime(r.created_at)}. Whatever the app changed since that restore is lost.`),
    h("p", { class: "notice info" }, `Stop the app in ${target.name} first.`),
    errors,
  ], [closeButton("Cancel"), undo]);
  undo.addEventListener("click", () => busy(undo, errors, () => startUndo(ctx, d, target.environment_id, r)));
}

async function startUndo(ctx, d, targetId, r) {
  const started = await api("POST", `${envPath(ctx.ns, targetId)}/restores/${encodeURIComponent(r.restore_id)}/undo`, {});
  ctx.refresh();
  await followRestore(ctx, d, targetId, started, true);
}

// followRestore shows a restore's (or its undo's) progress in the dialog until it ends, then the outcome:
// FINISHED with what it did and an Undo button while that is possible, or FAILED and why.
async function followRestore(ctx, d, targetId, r, undoing) {
  const target = ctx.envs().find((e) => e.environment_id === targetId);
  const status = h("div", { id: "restore-status", "aria-live": "polite" });
  d.setBody(status);
  d.setActions(closeButton());
  const path = `${envPath(ctx.ns, targetId)}/restores/${encodeURIComponent(r.restore_id)}`;
  for (;;) {
    const running = undoing ? (r.undo_state === "queued" || r.undo_state === "running") : (r.state === "queued" || r.state === "running");
    if (!running) break;
    clear(status, h("p", {}, undoing ? `Undoing the restore of ${target.name}…` : `Restoring into ${target.name}…`),
      progressElement(r.progress, undoing ? "Progress of the undo" : "Progress of the restore"));
    await sleep(POLL_MS);
    if (!d.isOpen()) { ctx.refresh(); return; } // closed: the restores table goes on showing it
    try {
      r = await api("GET", path);
    } catch (err) {
      clear(status, problemBox(err));
      return;
    }
  }
  ctx.refresh();
  if (undoing) {
    const ok = r.undo_state === "completed";
    clear(status, h("p", { class: "outcome" }, badge(ok ? "FINISHED" : "FAILED"), " ",
      ok ? `The restore was undone: ${target.name} is back as it was before it.` : `The undo failed: ${r.undo_status_message}`));
    return;
  }
  if (r.state !== "completed") {
    clear(status, h("p", { class: "outcome" }, badge("FAILED"), " ", `The restore failed: ${r.status_message}`));
    return;
  }
  clear(status,
    h("p", { class: "outcome" }, badge("FINISHED"), " ", `${target.name} was restored.`),
    h("dl", { class: "details" },
      h("dt", {}, "Tables verified"), h("dd", {}, `${formatCount(r.tables)} (${formatCount(r.rows)} rows)`),
      h("dt", {}, "Files"), h("dd", {}, `${formatCount(r.files_added)} added, ${formatCount(r.files_replaced)} replaced, ${formatCount(r.files_unchanged)} unchanged`),
      h("dt", {}, "Undo possible until"), h("dd", {}, formatTime(r.undo_until))),
    r.warnings.length ? h("ul", { class: "warning" }, r.warnings.map((w) => h("li", {}, w))) : null);
  if (r.undo_available) {
    const errors = errorArea();
    const undo = h("button", { type: "button", id: "restore-undo" }, "Undo");
    undo.addEventListener("click", () => busy(undo, errors, () => startUndo(ctx, d, targetId, r)));
    status.append(errors);
    d.setActions(undo, closeButton());
  }
}

// ---- Download ----

const KINDS = [
  { type: "files_and_database", label: "Full snapshot (database and files)" },
  { type: "database_only", label: "Database only" },
];

export async function downloadSnapshot(ctx, s) {
  const env = ctx.env();
  const base = `${envPath(ctx.ns, env.environment_id)}/snapshots/${encodeURIComponent(s.snapshot_id)}/archives`;
  const rows = new Map(KINDS.map((k) => [k.type, h("div", { class: "download-row", id: `download-${k.type}` })]));
  const d = openDialog("Download backup", [
    h("p", {}, `Download the backup of ${formatTime(s.created_at)} as an archive in the Mendix Cloud format. Preparing it takes a moment; the link is valid 8 hours.`),
    ...rows.values(),
  ], [closeButton()]);
  let existing = [];
  try {
    existing = (await api("GET", base)).archives;
  } catch (err) {
    d.setBody(problemBox(err));
    return;
  }
  for (const k of KINDS) {
    const a = existing.find((x) => x.data_type === k.type && (x.state === "completed" ? !!x.url : x.state !== "failed"));
    renderArchive(d, rows.get(k.type), k, base, a || null);
    if (a && a.state !== "completed") followArchive(d, rows.get(k.type), k, base, a);
  }
}

function renderArchive(d, row, kind, base, a) {
  const title = h("h3", {}, kind.label);
  const errors = errorArea();
  if (!a || a.state === "failed") {
    const start = h("button", { type: "button", class: "primary", "aria-label": `Start preparing: ${kind.label}` }, "Start");
    start.addEventListener("click", () => busy(start, errors, async () => {
      const started = await api("POST", base, { data_type: kind.type });
      await followArchive(d, row, kind, base, started);
    }));
    clear(row, title, a ? h("p", { class: "error" }, `The last try failed: ${a.status_message}`) : null, start, errors);
    return;
  }
  if (a.state !== "completed") {
    clear(row, title, h("p", {}, badge(a.state), " ", a.status_message || "Preparing the archive…"),
      progressElement(a.progress, `Progress of preparing: ${kind.label}`));
    return;
  }
  const url = h("input", { type: "text", readonly: true, value: a.url, "aria-label": `Download URL: ${kind.label}`, hidden: true });
  const show = h("button", { type: "button", "aria-label": `Show URL: ${kind.label}`, "aria-expanded": "false" }, "Show URL");
  show.addEventListener("click", () => {
    url.hidden = !url.hidden;
    show.setAttribute("aria-expanded", String(!url.hidden));
    if (!url.hidden) url.select();
  });
  clear(row, title,
    h("p", {}, `${a.file_name} · ${formatBytes(a.size_bytes)} · link valid until ${formatTime(a.url_expires_at)}`),
    h("div", { class: "row" },
      h("a", { class: "button", href: a.url, download: a.file_name, "aria-label": `Download: ${kind.label}`, rel: "noreferrer" }, "Download"),
      show),
    url,
    h("p", { class: "muted" }, `SHA-256 ${a.sha256}`));
}

async function followArchive(d, row, kind, base, a) {
  while (a.state === "queued" || a.state === "running") {
    renderArchive(d, row, kind, base, a);
    await sleep(POLL_MS);
    if (!d.isOpen()) return;
    a = await api("GET", `${base}/${encodeURIComponent(a.archive_id)}`);
  }
  renderArchive(d, row, kind, base, a);
}

// ---- Upload Backup ----

export function uploadBackup(ctx) {
  const env = ctx.env();
  const file = h("input", { type: "file", id: "upload-file", name: "file", accept: ".tar.gz,.tgz,application/gzip" });
  const comment = h("textarea", { id: "upload-comment", name: "comment", maxlength: 1000 });
  const status = h("div", { id: "upload-status", "aria-live": "polite" });
  const errors = errorArea();
  const start = h("button", { type: "button", class: "primary", id: "upload-confirm" }, "Upload");
  const d = openDialog("Upload Backup", [
    h("p", {}, `Upload an archive in the Mendix Cloud format (a .tar.gz, e.g. a Mendix Cloud Full Snapshot or a download of this service) as a new backup of ${env.name}. It is checked before it can be restored.`),
    h("div", { class: "field" }, h("label", { for: "upload-file" }, "Archive"), file),
    h("div", { class: "field" }, h("label", { for: "upload-comment" }, "Comment"), comment),
    status, errors,
  ], [closeButton("Cancel"), start]);
  start.addEventListener("click", () => busy(start, errors, async () => {
    const f = file.files[0];
    if (!f) throw { title: "No file chosen", detail: "Choose the archive to upload." };
    const p = envPath(ctx.ns, env.environment_id);
    const upload = await api("POST", `${p}/uploads`, { file_name: f.name });
    if (f.size > upload.max_size_bytes) {
      throw { title: "The archive is too large", detail: `It has ${formatBytes(f.size)}; uploads take at most ${formatBytes(upload.max_size_bytes)}.` };
    }
    const bar = h("progress", { max: 100, value: 0, id: "upload-progress", "aria-label": "Upload progress" });
    const text = h("span", { class: "progress-text" }, "Uploading…");
    clear(status, bar, text);
    file.disabled = true;
    await uploadFile(f, upload.upload_url, (done) => {
      bar.value = f.size ? Math.round((100 * done) / f.size) : 100;
      text.textContent = `Uploading… ${formatBytes(done)} of ${formatBytes(f.size)}`;
    });
    text.textContent = "Uploaded. Checking the archive…";
    let s = await api("POST", `${p}/uploads/${encodeURIComponent(upload.upload_id)}/complete`, { comment: comment.value });
    d.setActions(closeButton());
    ctx.refresh();
    while (s.status === "Processing") {
      await sleep(POLL_MS);
      if (!d.isOpen()) return;
      s = await api("GET", `${p}/snapshots/${encodeURIComponent(s.snapshot_id)}`);
    }
    ctx.refresh();
    if (s.status === "Finished") {
      clear(status, h("p", { id: "upload-result", class: "outcome" }, badge("Finished"), " ",
        `The archive is valid and is now a backup of ${env.name}: ${formatCount(s.files_count)} files, a ${formatBytes(s.dump_size_bytes)} database dump.`),
      s.warnings.length ? h("ul", { class: "warning" }, s.warnings.map((w) => h("li", {}, w))) : null);
    } else {
      clear(status, h("p", { id: "upload-result", class: "outcome" }, badge("Failed"), " ", `The archive was refused: ${s.status_message}`));
    }
  }));
}
