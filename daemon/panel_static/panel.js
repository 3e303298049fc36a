// morphcam control panel. Plain script, no build step. User text is only ever set with
// textContent, never parsed as HTML.
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
const $ = (id) => document.getElementById(id);
const state = { session: null, styles: [], history: [], lastPrompt: "" };

function headers(json) {
  const h = { "X-Morphcam": "1" };
  if (token) h["Authorization"] = "Bearer " + token;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(path, body) {
  const init = body === undefined ? { headers: headers(false) }
    : { method: "POST", headers: headers(true), body: JSON.stringify(body) };
  const res = await fetch(path, init);
  if (!res.ok) {
    let msg = res.status + " " + res.statusText;
    try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return res;
}

function say(text, ok) {
  const m = $("message");
  m.textContent = text;
  m.className = ok ? "ok" : "";
  m.hidden = !text;
  if (ok) setTimeout(() => { if (m.textContent === text) m.hidden = true; }, 2500);
}

async function imageInto(img, path) {
  try {
    const blob = await (await api(path)).blob();
    const old = img.src;
    img.src = URL.createObjectURL(blob);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  } catch (e) { /* no frame yet: keep the last one */ }
}

async function change(kind, body, done) {
  if (!state.session) return;
  try {
    await api(`/api/sessions/${state.session}/${kind}`, body);
    say(done, true);
    refresh();
  } catch (e) { say(e.message, false); }
}

function promptBody(text) {
  const body = { text, mode: $("mode").value, interpolation: $("interpolation").value };
  if (body.mode === "transition") body.transition_frames = parseInt($("frames").value, 10) || 1;
  return body;
}

function renderStyles() {
  const box = $("styles");
  box.replaceChildren();
  for (const s of state.styles) {
    const b = document.createElement("button");
    b.className = "style";
    b.type = "button";
    b.dataset.style = s.name;
    b.title = s.prompt;
    const img = document.createElement("img");
    img.alt = s.name;
    const label = document.createElement("span");
    label.textContent = s.name;
    b.append(img, label);
    b.addEventListener("click", () => change("prompt", promptBody(s.prompt), `style: ${s.name}`));
    box.append(b);
    imageInto(img, `/api/styles/${encodeURIComponent(s.name)}/thumbnail.jpg`);
  }
}

function drawChart() {
  const c = $("chart"), g = c.getContext("2d"), h = state.history;
  g.clearRect(0, 0, c.width, c.height);
  if (h.length < 2) return;
  const maxFps = Math.max(30, ...h.map((p) => p.fps));
  const maxLat = Math.max(20, ...h.map((p) => p.p99));
  const line = (key, max, color) => {
    g.strokeStyle = color;
    g.beginPath();
    h.forEach((p, i) => {
      const x = (i / 59) * c.width, y = c.height - 4 - (p[key] / max) * (c.height - 8);
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
  };
  line("fps", maxFps, "#7c5cff");
  line("p99", maxLat, "#e0a040");
}

function renderSession(s) {
  $("fps-in").textContent = s.fps_in.toFixed(1);
  $("fps-out").textContent = s.fps_out.toFixed(1);
  $("p50").textContent = s.latency_p50_ms.toFixed(1);
  $("p99").textContent = s.latency_p99_ms.toFixed(1);
  $("dropped").textContent = String(s.dropped);
  const prompt = s.prompts.map((p) => (s.prompts.length > 1 ? `${p.weight}×` : "") + p.text).join(" + ");
  $("current-prompt").textContent = prompt;
  state.lastPrompt = prompt;
  for (const b of document.querySelectorAll(".style")) {
    const style = state.styles.find((x) => x.name === b.dataset.style);
    b.classList.toggle("active", !!style && s.prompts.length === 1 && style.prompt === s.prompts[0].text);
  }
  if (document.activeElement !== $("enabled")) $("enabled").checked = s.enabled;
  if (document.activeElement !== $("strength") && s.strength) $("strength").value = s.strength;
  $("strength-value").textContent = Number($("strength").value).toFixed(2);
  if (document.activeElement !== $("seed") && s.seed !== null) $("seed").value = s.seed;
  const list = $("activity");
  list.replaceChildren();
  for (const a of s.activity.slice().reverse()) {
    const li = document.createElement("li");
    const who = document.createElement("b");
    who.textContent = a.origin;
    li.append(new Date(a.time * 1000).toLocaleTimeString() + " ", who, " " + a.action);
    list.append(li);
  }
  state.history.push({ fps: s.fps_out, p99: s.latency_p99_ms });
  if (state.history.length > 60) state.history.shift();
  drawChart();
}

async function refresh() {
  let status;
  try {
    status = await (await api("/api/status")).json();
  } catch (e) {
    say("daemon unreachable: " + e.message, false);
    return;
  }
  $("pipeline").textContent = `${status.pipeline} on ${status.device}` + (status.note ? ` (${status.note})` : "");
  const select = $("session");
  const ids = status.sessions.map((s) => s.id);
  if (!ids.includes(state.session)) { state.session = ids[0] || null; state.history = []; }
  select.replaceChildren(...status.sessions.map((s) => {
    const o = document.createElement("option");
    o.value = s.id;
    o.textContent = `${s.name || s.id} (${s.width}×${s.height})`;
    o.selected = s.id === state.session;
    return o;
  }));
  select.hidden = ids.length < 2;
  $("empty").hidden = ids.length > 0;
  $("controls").hidden = ids.length === 0;
  const s = status.sessions.find((x) => x.id === state.session);
  if (s) renderSession(s);
}

function previews() {
  if (!state.session || document.hidden) return;
  imageInto($("preview-input"), `/api/sessions/${state.session}/preview.jpg?side=input`);
  imageInto($("preview-output"), `/api/sessions/${state.session}/preview.jpg?side=output`);
}

async function start() {
  $("session").addEventListener("change", (e) => { state.session = e.target.value; state.history = []; refresh(); });
  $("prompt-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("prompt-text").value.trim();
    if (!text) { say("type a prompt first", false); return; }
    change("prompt", promptBody(text), "prompt applied");
  });
  $("enabled").addEventListener("change", (e) => change("update", { enabled: e.target.checked }, e.target.checked ? "effect on" : "effect off"));
  $("strength").addEventListener("change", (e) => change("update", { strength: Number(e.target.value) }, "strength set"));
  $("seed").addEventListener("change", (e) => change("update", { seed: parseInt(e.target.value, 10) || 0 }, "seed set"));
  $("reset").addEventListener("click", () => change("update", { reset: true }, "history reset"));
  try {
    state.styles = await (await api("/api/styles")).json();
    renderStyles();
  } catch (e) { say("styles: " + e.message, false); }
  await refresh();
  previews();
  setInterval(refresh, 1000);
  setInterval(previews, 500);
}

start();
