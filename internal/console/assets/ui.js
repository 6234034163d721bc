// Small DOM helpers: building elements, formatting, the dialog, the menu button and messages. Text is
// always set as text (never as HTML), so nothing the API returns can inject markup.

// h builds an element: h("button", {class: "primary", onclick: f}, "Create").
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const dateFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
});
export function formatTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : dateFormat.format(d);
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return i === 0 ? `${v} bytes` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function formatCount(n) { return Number(n || 0).toLocaleString("en-US"); }

export function capitalize(s) { return s ? s[0].toUpperCase() + s.slice(1) : s; }

// progressOf turns an API progress object into [fraction or null, sentence].
export function progressOf(p) {
  if (!p) return [null, ""];
  const parts = [capitalize(p.phase || "working")];
  let fraction = null;
  if (p.files_total > 0) {
    parts.push(`${formatCount(p.files_done)} of ${formatCount(p.files_total)} files`);
    fraction = Math.min(1, p.files_done / p.files_total);
  }
  if (p.bytes_done > 0) parts.push(formatBytes(p.bytes_done));
  return [fraction, parts.join(" · ")];
}

export function progressElement(p, label) {
  const [fraction, text] = progressOf(p);
  const bar = h("progress", { max: 100, "aria-label": label });
  if (fraction !== null) bar.value = Math.round(fraction * 100);
  return h("span", { class: "progress" }, bar, h("span", { class: "progress-text" }, text));
}

export function badge(status) {
  return h("span", { class: `badge ${status}`, dataset: { status } }, status);
}

// problemBox shows an error's title and sentence in the page.
export function problemBox(err) {
  const title = err && err.title ? err.title : "Something went wrong";
  const detail = err && (err.detail || err.message) ? (err.detail || err.message) : "Try again in a moment.";
  return h("div", { class: "problem", role: "alert" }, h("strong", {}, title), h("span", {}, detail));
}

export function toast(message) {
  const box = document.getElementById("toasts");
  const t = h("div", { class: "toast" }, message);
  box.append(t);
  setTimeout(() => t.remove(), 6000);
}

// The one dialog for actions. openDialog replaces its content and shows it modally; the returned
// object lets the action update the body while it runs, and tells it when the user closed the dialog.
const dialog = () => document.getElementById("dialog");

export function openDialog(title, body, actions) {
  const d = dialog();
  const bodyEl = h("div", { class: "dialog-body" }, body);
  const actionsEl = h("div", { class: "actions" }, actions);
  clear(d, h("h2", { id: "dialog-title" }, title), bodyEl, actionsEl);
  if (!d.open) d.showModal();
  const first = d.querySelector("select, input, textarea, button.primary, button");
  if (first) first.focus();
  return {
    body: bodyEl,
    setBody: (...c) => clear(bodyEl, ...c),
    setActions: (...c) => clear(actionsEl, ...c),
    close: closeDialog,
    isOpen: () => d.open && d.contains(bodyEl),
  };
}

export function closeDialog() {
  const d = dialog();
  if (d.open) d.close();
}

export function initDialog() {
  // The close event comes a task after close(): by then another dialog may have opened, whose content
  // must stay.
  dialog().addEventListener("close", () => {
    if (!dialog().open) clear(dialog());
  });
}

export function closeButton(label = "Close") {
  return h("button", { type: "button", onclick: closeDialog }, label);
}

// menuButton is a "More Options" button with a menu of items [{label, onSelect, disabled}].
let openMenu = null;
export function menuButton(label, accessibleName, items) {
  const wrap = h("span", { class: "menu-wrap" });
  const button = h("button", { type: "button", "aria-haspopup": "menu", "aria-expanded": "false", "aria-label": accessibleName }, label);
  const menu = h("div", { class: "menu", role: "menu", hidden: true, "aria-label": accessibleName });
  for (const item of items) {
    menu.append(h("button", {
      type: "button", role: "menuitem", disabled: item.disabled,
      onclick: () => { hideMenu(); item.onSelect(); },
    }, item.label));
  }
  button.addEventListener("click", (e) => {
    e.stopPropagation();
    const open = menu.hidden;
    hideMenu();
    if (open) {
      menu.hidden = false;
      button.setAttribute("aria-expanded", "true");
      openMenu = { menu, button };
      const first = menu.querySelector("button:not(:disabled)");
      if (first) first.focus();
    }
  });
  menu.addEventListener("keydown", (e) => {
    const buttons = [...menu.querySelectorAll("button:not(:disabled)")];
    const i = buttons.indexOf(document.activeElement);
    if (e.key === "Escape") { hideMenu(); button.focus(); }
    else if (e.key === "ArrowDown") { e.preventDefault(); buttons[(i + 1) % buttons.length].focus(); }
    else if (e.key === "ArrowUp") { e.preventDefault(); buttons[(i - 1 + buttons.length) % buttons.length].focus(); }
  });
  wrap.append(button, menu);
  return wrap;
}

export function hideMenu() {
  if (!openMenu) return;
  openMenu.menu.hidden = true;
  openMenu.button.setAttribute("aria-expanded", "false");
  openMenu = null;
}

export function isMenuOpen() { return openMenu !== null; }

document.addEventListener("click", (e) => {
  if (openMenu && !openMenu.menu.contains(e.target)) hideMenu();
});

// sleep waits ms milliseconds.
export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }
