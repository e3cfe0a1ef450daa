// The clickable photo (ui/clicker): shows the preview JPEG Python sends, draws a click's dot or a
// drag's box at once, and shows a spinner until the next picture (with the mask) arrives.
// Shift-click or right-click = remove; Ctrl+Z / Cmd+Z = undo. It speaks Streamlit's component
// protocol (postMessage) directly, like streamlit-component-lib does: no build step.
"use strict";

const stage = document.getElementById("stage");
const img = document.getElementById("photo");
const marks = document.getElementById("marks");
const spinner = document.getElementById("spinner");

const CLICK_DRAG_PX = 10;   // a mouse drag longer than this (both ways) in click mode is a box
const BOX_DRAG_PX = 6;      // ... in box mode (ui/canvas.py MIN_BOX_PX)
// a quick mask (SAM: a few hundred ms) needs no spinner, and none runs meanwhile: its animation
// frames cost the click ~10 % in headless Chromium; GrabCut or a first click (seconds) get it
const SPINNER_AFTER_MS = 500;

let args = {label: 1, box_mode: false, seen: null};
let pending = [];           // events sent that the picture does not show yet (unix_time > seen)
let lastTime = 0;
let down = null;            // the pointer pressed on the photo: {x, y, id, remove, mouse}
let drag = null;            // the box being dragged: {x1, y1, x2, y2}
let frameHeight = 0;
let spinnerTimer = null;

function send(type, data) {
  window.parent.postMessage(Object.assign({isStreamlitMessage: true, type: type}, data), "*");
}

function fit(force) {
  const h = Math.ceil(stage.getBoundingClientRect().height);
  if (h > 0 && (force || h !== frameHeight)) {
    frameHeight = h;
    send("streamlit:setFrameHeight", {height: h});
  }
}

function emit(event) {
  lastTime = Math.max(Date.now(), lastTime + 1);
  event.unix_time = lastTime;
  event.width = img.clientWidth;
  event.height = img.clientHeight;
  pending.push(event);
  pending = pending.slice(-50);
  // the event itself plus every one not shown yet: a click made while the last one is still
  // being segmented is not lost (Python applies each once, by unix_time)
  send("streamlit:setComponentValue", {value: Object.assign({}, event, {events: pending.slice()}),
                                       dataType: "json"});
  draw();
}

function mark(cls, css) {
  const el = document.createElement("div");
  el.className = cls;
  Object.assign(el.style, css);
  marks.appendChild(el);
}

function pct(v, size) {
  return (100 * v / size) + "%";
}

function rect(b, w, h) {
  mark("rect", {left: pct(Math.min(b.x1, b.x2), w), top: pct(Math.min(b.y1, b.y2), h),
                width: pct(Math.abs(b.x2 - b.x1), w), height: pct(Math.abs(b.y2 - b.y1), h)});
}

// What the picture does not show yet: the pending clicks and boxes (an undo takes back the last
// pending one), and the box being dragged. Positions are fractions, so a resize keeps them.
function draw() {
  marks.textContent = "";
  const shown = [];
  for (const e of pending) {
    if (e.undo) shown.pop();
    else shown.push(e);
  }
  for (const e of shown) {
    if ("x1" in e) rect(e, e.width, e.height);
    else mark("dot " + (e.label === 0 ? "remove" : "add"), {left: pct(e.x, e.width), top: pct(e.y, e.height)});
  }
  if (drag) rect(drag, img.clientWidth, img.clientHeight);
  if (pending.length === 0) {
    clearTimeout(spinnerTimer);
    spinnerTimer = null;
    spinner.hidden = true;
  } else if (spinner.hidden && spinnerTimer === null) {
    spinnerTimer = setTimeout(() => { spinnerTimer = null; spinner.hidden = pending.length === 0; },
                              SPINNER_AFTER_MS);
  }
  const last = shown[shown.length - 1];     // the spinner turns around it (an undo: the middle)
  const [x, y, w, h] = !last ? [1, 1, 2, 2] : "x1" in last
    ? [last.x1 + last.x2, last.y1 + last.y2, 2 * last.width, 2 * last.height] : [last.x, last.y, last.width, last.height];
  spinner.style.left = pct(x, w);
  spinner.style.top = pct(y, h);
}

function acknowledge() {
  const seen = args.seen;
  if (typeof seen === "number") pending = pending.filter((e) => e.unix_time > seen);
  draw();
}

function at(e) {
  const r = img.getBoundingClientRect();
  return {x: Math.min(Math.max(e.clientX - r.left, 0), r.width),
          y: Math.min(Math.max(e.clientY - r.top, 0), r.height)};
}

img.addEventListener("pointerdown", (e) => {
  if (e.button !== 0 && e.button !== 2) return;
  const p = at(e);
  down = {x: p.x, y: p.y, id: e.pointerId, remove: e.button === 2 || e.shiftKey, mouse: e.pointerType === "mouse"};
  drag = null;
  if (down.mouse || args.box_mode) {
    try { img.setPointerCapture(e.pointerId); } catch (_) { /* ignore */ }
  }
  try { window.focus(); } catch (_) { /* ignore */ }   // so Ctrl+Z reaches this page
});

img.addEventListener("pointermove", (e) => {
  if (!down || e.pointerId !== down.id || down.remove || !(down.mouse || args.box_mode)) return;
  const p = at(e);
  const min = args.box_mode ? BOX_DRAG_PX : CLICK_DRAG_PX;
  drag = (Math.abs(p.x - down.x) >= min && Math.abs(p.y - down.y) >= min)
    ? {x1: down.x, y1: down.y, x2: p.x, y2: p.y} : null;
  draw();
});

img.addEventListener("pointerup", (e) => {
  if (!down || e.pointerId !== down.id) return;
  const d = down;
  const box = drag;
  down = null;
  drag = null;
  if (box) emit({x1: box.x1, y1: box.y1, x2: box.x2, y2: box.y2});
  else emit({x: d.x, y: d.y, label: d.remove ? 0 : (args.label === 0 ? 0 : 1)});
});

img.addEventListener("pointercancel", () => {   // e.g. the finger scrolled the page
  down = null;
  drag = null;
  draw();
});

img.addEventListener("contextmenu", (e) => e.preventDefault());   // right-click = remove

img.addEventListener("load", () => {
  acknowledge();
  fit(true);
});
img.addEventListener("error", acknowledge);

// Ctrl+Z / Cmd+Z: on this page and on the app's page around it (same origin), not while typing.
function onKey(e) {
  if (!(e.ctrlKey || e.metaKey) || e.shiftKey || e.altKey || (e.key !== "z" && e.key !== "Z")) return;
  const t = e.target;
  if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName || ""))) return;
  const frame = window.frameElement;
  if (frame && !frame.isConnected) return;      // this photo has left the page
  e.preventDefault();
  emit({undo: true});
}
document.addEventListener("keydown", onKey);
try {
  const top = window.parent;
  if (top !== window) {
    if (top.__backdropUndoKey) top.document.removeEventListener("keydown", top.__backdropUndoKey);
    top.__backdropUndoKey = onKey;
    top.document.addEventListener("keydown", onKey);
    window.addEventListener("pagehide", () => {
      if (top.__backdropUndoKey === onKey) {
        top.document.removeEventListener("keydown", onKey);
        top.__backdropUndoKey = null;
      }
    });
  }
} catch (_) { /* another origin: Ctrl+Z works once the photo has the focus */ }

window.addEventListener("message", (event) => {
  const data = event.data;
  if (!data || data.type !== "streamlit:render") return;
  args = data.args || {};
  stage.classList.toggle("box", !!args.box_mode);
  if (args.src && img.getAttribute("src") !== args.src) {
    img.src = args.src;              // the pending marks go when it has loaded (no blink)
  } else {
    acknowledge();
    fit(true);
  }
});

new ResizeObserver(() => fit(false)).observe(stage);
send("streamlit:componentReady", {apiVersion: 1});
