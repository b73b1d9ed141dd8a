// The jspsych-tobii status page: polls status.json several times a second and
// shows it.  Reading the status changes nothing for experiment pages; the
// preview button is the one action, and it records nothing.
//
// The page also writes what it shows into data- attributes of <body>
// (updates, tracker, pages, frames, gaze-x, gaze-y, gaze-source), so a
// script or a test can read its state from the DOM.
"use strict";

const POLL_MS = 200;            // five updates a second
const PREVIEW_RENEW_MS = 1500;  // the server lets a preview lapse after 5 s without renewal

const $ = (id) => document.getElementById(id);
const body = document.body;
const previewId = "p" + Math.random().toString(36).slice(2, 12);
let previewOn = false;
let previewRenewedAt = 0;
let updates = 0;
let lastStatus = null;

function text(id, value) {
  const el = $(id);
  const s = value === null || value === undefined || value === "" ? "-" : String(value);
  if (el.textContent !== s) el.textContent = s;
}

function num(value, digits = 0, unit = "") {
  if (value === null || value === undefined) return "-";
  return value.toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits}) + unit;
}

function percent(value) {
  return value === null || value === undefined ? "-" : (value * 100).toFixed(1) + " %";
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? h + " h " : "") + (h || m ? m + " min " : "") + r + " s";
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
  if (n < 1024 * 1024 * 1024) return (n / 1024 / 1024).toFixed(1) + " MiB";
  return (n / 1024 / 1024 / 1024).toFixed(2) + " GiB";
}

function pill(id, label, kind) {
  const el = $(id);
  text(id, label);
  el.className = "pill " + (kind || "");
}

function banners(status, failure) {
  const list = [];
  if (failure) list.push(["bad", "The server does not answer (" + failure + "). Is it running?"]);
  if (status) {
    const t = status.tracker;
    if (t.warning) list.push(["loud", t.warning]);
    if (t.state === "none") {
      list.push(["bad", "NO EYE TRACKER CONNECTED" + (t.error ? ": " + t.error : "") +
        ". The server keeps looking for one."]);
    } else if (t.state === "lost") {
      list.push(["bad", "THE EYE TRACKER CONNECTION IS LOST. The server waits for it to come back."]);
    }
    if (status.recording && status.recording.error) {
      list.push(["bad", "RECORDING FAILED: " + status.recording.error]);
    }
  }
  const html = list.map(([kind, message]) => `<div class="banner ${kind}"></div>`).join("");
  const box = $("banners");
  if (box.childElementCount !== list.length) box.innerHTML = html;
  list.forEach(([kind, message], i) => {
    const el = box.children[i];
    el.className = "banner " + kind;
    if (el.textContent !== message) el.textContent = message;
  });
}

function showServer(s) {
  text("server-line", `version ${s.version} · up ${duration(s.uptimeSeconds)} · started ${s.startedUtc}`);
  const link = $("experiment-link");
  if (s.experimentFolder && !link.childElementCount) {
    link.append(" · experiments: ");
    const a = document.createElement("a");
    a.href = "experiment/";
    a.textContent = "/experiment/";
    a.title = s.experimentFolder;
    link.append(a);
  }
}

function showTracker(t) {
  const kind = t.state === "connected" ? (t.warning ? "warn" : "good") : "bad";
  pill("tracker-state", t.state === "none" ? "none" : t.state, kind);
  text("tracker-model", t.model);
  text("tracker-serial", t.serial);
  text("tracker-address", t.address);
  text("tracker-frequency", t.frequency ? num(t.frequency, 0, " Hz") : null);
  text("tracker-firmware", t.firmware);
  text("tracker-source", {mock: "mock (synthetic gaze)", replay: "replay of a recording",
    "sdk-child": "Tobii SDK in a child process", device: "Tobii SDK"}[t.source] || t.source);
  text("tracker-error", t.error);
}

function showSession(s, tracker) {
  pill("session-state", s.running ? "running" : "stopped", s.running ? "good" : "");
  text("session-number", s.number || null);
  text("session-pages", s.trackingPages);
  text("session-samples", num(s.samples));
  text("session-duration", s.running ? duration(s.durationSeconds) : null);
  const nominal = tracker.frequency ? ` (tracker: ${num(tracker.frequency)} Hz)` : "";
  text("session-rate", s.rateHz === null ? null : num(s.rateHz, 1, " Hz") + nominal);
  text("session-loss", percent(s.dataLoss));
  text("session-age", s.lastSampleAgeSeconds === null ? null : num(s.lastSampleAgeSeconds * 1000, 0, " ms ago"));
}

function showPages(pages) {
  pill("pages-count", String(pages.length), pages.length ? "good" : "");
  const rows = $("pages-rows");
  if (!pages.length) {
    rows.innerHTML = '<tr><td colspan="8">no page is connected</td></tr>';
    return;
  }
  rows.innerHTML = "";
  for (const p of pages) {
    const tr = document.createElement("tr");
    const cells = [p.peer, p.origin || "(none)", p.tracking ? "yes" : "no", p.calibrating ? "yes" : "no",
      duration(p.connectedSeconds), num(p.framesSent), num(p.framesDropped), num(p.backlog)];
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      td.textContent = value;
      if (i === 6 && p.framesDropped > 0) td.className = "bad-text";
      tr.append(td);
    });
    rows.append(tr);
  }
}

function showRecording(r, server) {
  if (!r) {
    pill("recording-state", "off", "");
    text("recording-file", "not recording (start the server with --record-dir DIR)");
    for (const id of ["recording-dir", "recording-size", "recording-written", "recording-flushed",
      "recording-dropped", "recording-error"]) text(id, null);
    return;
  }
  pill("recording-state", r.active ? "recording" : "idle", r.error ? "bad" : r.active ? "good" : "");
  text("recording-file", r.file ? r.file + (r.active ? "" : " (last session, closed)") : "no session recorded yet");
  text("recording-dir", r.directory);
  text("recording-size", bytes(r.bytes));
  text("recording-written", r.written === undefined ? null : `${num(r.written)} of ${num(r.samples)}`);
  text("recording-flushed", r.flushed === undefined ? null :
    `${num(r.flushed)} samples` + (r.lastFlushedSampleAgeSeconds === null ? "" :
      `, newest ${num(r.lastFlushedSampleAgeSeconds, 1)} s old`));
  text("recording-dropped", r.dropped === undefined ? null : num(r.dropped));
  text("recording-error", r.error);
}

function showQuality(calibration, validation) {
  const rows = [];
  const deg = (v) => v === null ? "-" : v.toFixed(2) + "°";
  const norm = (v) => v === null ? "-" : v.toFixed(3);
  const add = (label, metric, format) => {
    if (metric) rows.push([label, format(metric.left), format(metric.right), format(metric.average)]);
  };
  if (calibration) {
    rows.push(["Calibration " + (calibration.success ? "succeeded" : "FAILED"), "", "", ""]);
    add("accuracy", calibration.accuracyDeg, deg);
    add("accuracy (norm.)", calibration.accuracyNorm, norm);
    add("precision (norm.)", calibration.precisionNorm, norm);
  }
  if (validation) {
    rows.push(["Validation " + (validation.success ? "" : "(no usable gaze)"), "", "", ""]);
    add("accuracy", validation.accuracyDeg, deg);
    add("precision RMS-S2S", validation.precisionRmsS2SDeg, deg);
    add("precision SD", validation.precisionStdDeg, deg);
    add("data loss", validation.dataLoss, percent);
  }
  const tbody = $("quality-rows");
  if (!rows.length) {
    if (!tbody.dataset.empty) tbody.innerHTML = '<tr><td colspan="4">no calibration or validation yet</td></tr>';
    tbody.dataset.empty = "1";
  } else {
    delete tbody.dataset.empty;
    tbody.innerHTML = "";
    for (const row of rows) {
      const tr = document.createElement("tr");
      row.forEach((value, i) => {
        const cell = document.createElement(i === 0 ? "th" : "td");
        cell.textContent = value;
        tr.append(cell);
      });
      tbody.append(tr);
    }
  }
  const when = [];
  if (calibration) when.push(`calibration at ${calibration.atUtc} (${duration(calibration.ageSeconds)} ago)`);
  if (validation) when.push(`validation at ${validation.atUtc} (${duration(validation.ageSeconds)} ago)`);
  text("quality-when", when.join("; ") || null);
}

function drawGaze(gaze) {
  const canvas = $("gaze-plot");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.fillStyle = "#1d2430";
  ctx.fillRect(0, 0, w, h);
  ctx.strokeStyle = "#3b4657";
  ctx.lineWidth = 1;
  for (const f of [0.25, 0.5, 0.75]) {
    ctx.beginPath(); ctx.moveTo(f * w, 0); ctx.lineTo(f * w, h); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, f * h); ctx.lineTo(w, f * h); ctx.stroke();
  }
  const points = gaze.points.filter((p) => p[1] !== null && p[2] !== null);
  points.forEach(([age, x, y]) => {
    const fade = Math.max(0.1, 1 - age / 1000);
    ctx.fillStyle = `rgba(255, 120, 90, ${fade.toFixed(2)})`;
    ctx.beginPath(); ctx.arc(x * w, y * h, 3, 0, 2 * Math.PI); ctx.fill();
  });
  if (gaze.latest && gaze.latest.x !== null) {
    ctx.fillStyle = "#ff4a2a";
    ctx.strokeStyle = "#ffffff";
    ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(gaze.latest.x * w, gaze.latest.y * h, 8, 0, 2 * Math.PI);
    ctx.fill(); ctx.stroke();
  }
  if (!gaze.source) {
    ctx.fillStyle = "#9aa5b5";
    ctx.font = "15px sans-serif";
    ctx.textAlign = "center";
    ctx.fillText("no gaze stream: no experiment is tracking", w / 2, h / 2 - 10);
    ctx.fillText("(start a preview to see the gaze here)", w / 2, h / 2 + 12);
  }
}

// green, amber, red by the distance from the ideal 0.5 (the user-position plugin's thresholds)
function deviationColour(d) {
  return d <= 0.15 ? "#3cb371" : d <= 0.25 ? "#f0b429" : "#e0483d";
}

function positionColour(v) {
  return v === null ? "#777" : deviationColour(Math.abs(v - 0.5));
}

function drawHead(position) {
  const canvas = $("head-plot");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  const box = {x: 20, y: 20, w: w - 70, h: h - 40};
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#f3f5f8";
  ctx.fillRect(box.x, box.y, box.w, box.h);
  ctx.strokeStyle = "#a7b0bd";
  ctx.strokeRect(box.x, box.y, box.w, box.h);
  ctx.setLineDash([4, 4]);
  ctx.strokeRect(box.x + box.w * 0.35, box.y + box.h * 0.35, box.w * 0.3, box.h * 0.3);
  ctx.setLineDash([]);
  // distance bar: z 0 = far (bottom), 1 = close (top), 0.5 ideal
  const bar = {x: w - 35, y: box.y, w: 14, h: box.h};
  ctx.fillStyle = "#f3f5f8";
  ctx.fillRect(bar.x, bar.y, bar.w, bar.h);
  ctx.strokeRect(bar.x, bar.y, bar.w, bar.h);
  ctx.beginPath(); ctx.moveTo(bar.x - 4, bar.y + bar.h / 2); ctx.lineTo(bar.x + bar.w + 4, bar.y + bar.h / 2); ctx.stroke();
  if (!position) {
    $("head-caption").textContent = "Eyes in the track box, seen from the tracker: no position.";
    return;
  }
  const eyes = [["L", position.leftX, position.leftY, position.leftZ, position.leftValid],
    ["R", position.rightX, position.rightY, position.rightZ, position.rightValid]];
  const zs = [];
  for (const [label, x, y, z, valid] of eyes) {
    if (!valid || x === null || y === null) continue;
    // seen from the tracker: the participant's left eye appears on the right
    const px = box.x + (1 - x) * box.w, py = box.y + (1 - y) * box.h;
    ctx.fillStyle = deviationColour(Math.max(Math.abs(x - 0.5), Math.abs(y - 0.5)));
    ctx.beginPath(); ctx.arc(px, py, 9, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = "#fff";
    ctx.font = "bold 11px sans-serif";
    ctx.textAlign = "center";
    ctx.fillText(label, px, py + 4);
    if (z !== null) zs.push(z);
  }
  let caption = "Eyes in the track box, seen from the tracker";
  if (zs.length) {
    const z = zs.reduce((a, b) => a + b, 0) / zs.length;
    ctx.fillStyle = positionColour(z);
    ctx.fillRect(bar.x, bar.y + (1 - z) * bar.h - 3, bar.w, 6);
    caption += z > 0.65 ? ": too close" : z < 0.35 ? ": too far" : ": distance good";
  } else {
    caption += ": no eye seen";
  }
  $("head-caption").textContent = caption + " (bar: distance, centre line ideal).";
}

function showGaze(status) {
  const gaze = status.gaze;
  const source = gaze.source === "session" ? `the experiment's tracking session ${status.session.number}`
    : gaze.source === "preview" ? "PREVIEW (not recorded, not sent to any page)" : "no gaze stream";
  text("gaze-source", source);
  drawGaze(gaze);
  drawHead(status.position);
  body.dataset.gazeSource = gaze.source || "";
  body.dataset.gazeX = gaze.latest && gaze.latest.x !== null ? gaze.latest.x : "";
  body.dataset.gazeY = gaze.latest && gaze.latest.y !== null ? gaze.latest.y : "";
  body.dataset.gazePoints = String(gaze.points.length);
}

function showPreview(status) {
  const button = $("preview-button");
  const ours = previewOn;
  if (status.session.running && !ours) {
    button.textContent = "An experiment is tracking: its gaze is shown";
    button.disabled = true;
  } else {
    button.disabled = status.tracker.state !== "connected" && !ours;
    button.textContent = ours ? "Stop the preview" : "Start a preview (records nothing)";
  }
  button.classList.toggle("active", ours);
}

function render(status) {
  lastStatus = status;
  banners(status, null);
  showServer(status.server);
  showTracker(status.tracker);
  showSession(status.session, status.tracker);
  showPages(status.pages);
  showRecording(status.recording, status.server);
  showQuality(status.calibration, status.validation);
  showGaze(status);
  showPreview(status);
  updates += 1;
  body.dataset.updates = String(updates);
  body.dataset.tracker = status.tracker.state;
  body.dataset.pages = String(status.pages.length);
  body.dataset.frames = String(status.pages.reduce((sum, p) => sum + p.framesSent, 0));
  body.dataset.samples = String(status.session.samples);
}

async function setPreview(on) {
  const reply = await fetch("preview", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({id: previewId, on}),
    keepalive: !on,
  });
  const answer = await reply.json();
  if (!answer.ok) throw new Error(answer.error);
  previewRenewedAt = performance.now();
}

$("preview-button").addEventListener("click", async () => {
  const want = !previewOn;
  try {
    await setPreview(want);
    previewOn = want;
  } catch (e) {
    previewOn = false;
    $("preview-note").textContent = "The preview could not start: " + e.message;
  }
  if (lastStatus) showPreview(lastStatus);
});

window.addEventListener("pagehide", () => {
  if (previewOn) setPreview(false).catch(() => {});
});

async function poll() {
  const started = performance.now();
  try {
    const reply = await fetch("status.json", {cache: "no-store"});
    render(await reply.json());  // 503 (no tracker) carries the same facts
  } catch (e) {
    banners(lastStatus, e.message || String(e));
    body.dataset.error = e.message || String(e);
  }
  if (previewOn && performance.now() - previewRenewedAt > PREVIEW_RENEW_MS) {
    setPreview(true).catch((e) => {
      previewOn = false;
      $("preview-note").textContent = "The preview stopped: " + e.message;
    });
  }
  setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
}

poll();
