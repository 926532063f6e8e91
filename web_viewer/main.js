// posestream viewer: wires the connection, the three.js scene, the HUD, the 2D
// picture-in-picture and the recorder, and exposes test hooks on `window.posestream`.
//
// Latency figures (HUD and hooks):
//   browser  = message receipt (onmessage) -> renderer.render() returned for that frame, ms
//              (the draw calls are issued; the GPU process rasterises them afterwards).
//   nextFrame = message receipt -> start of the following animation frame (an upper bound on
//              when the compositor has the drawn frame).
//   total    = pipeline (timings_ms.latency or .total, else the sum of timings_ms) + transit (server publish
//              -> receipt, clock offset from ping/pong) + browser: the end-to-end estimate.
import { Connection } from './connection.js';
import { Recorder } from './recorder.js';
import { SkeletonView, peopleOf, personColors, toWorld } from './scene.js';

const SAMPLES = 3000;
const $ = (id) => document.getElementById(id);

class Stats {
  constructor() { this.reset(); }
  reset() {
    this.renders = []; this.renderMs = []; this.presented = []; this.received = []; this.browser = []; this.total = []; this.transit = [];
    this.rendersTotal = 0; this.thumbsReceived = 0; this.framesReceived = 0; this.framesDrawn = 0; this.superseded = 0; this.gapDropped = 0;
    this.serverDropped = 0; this.serverDroppedBase = null; this.lastIndex = null; this.t0 = performance.now();
  }
  static push(arr, v) { arr.push(v); if (arr.length > SAMPLES) arr.shift(); }
  static rate(times, now) { while (times.length && times[0] < now - 1000) times.shift(); return times.length; }
  static pct(arr, p) {
    if (!arr.length) return null;
    const s = [...arr].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))];
  }
  summary() {
    const now = performance.now();
    return {
      renderFps: Stats.rate(this.renders, now), streamFps: Stats.rate(this.received, now),
      rendersTotal: this.rendersTotal, since: this.t0, now,
      framesReceived: this.framesReceived, thumbsReceived: this.thumbsReceived, framesDrawn: this.framesDrawn, superseded: this.superseded,
      dropped: this.gapDropped, serverDropped: this.serverDropped,
      browserLatencyMs: { p50: Stats.pct(this.browser, 50), p95: Stats.pct(this.browser, 95), n: this.browser.length },
      nextFrameLatencyMs: { p50: Stats.pct(this.presented, 50), p95: Stats.pct(this.presented, 95) },
      totalLatencyMs: { p50: Stats.pct(this.total, 50), p95: Stats.pct(this.total, 95), n: this.total.length },
      transitMs: { p50: Stats.pct(this.transit, 50), p95: Stats.pct(this.transit, 95) },
      renderMs: { p50: Stats.pct(this.renderMs, 50), p95: Stats.pct(this.renderMs, 95) },
    };
  }
}

const stats = new Stats();
const view = new SkeletonView($('view'));
let pending = null;          // newest frame not drawn yet: {msg, receivedAt, transit, pipeline}
let lastFrame = null;
let lastWorld = null;
let hello = null;
let pipOn = false;
let thumb = null;            // {bitmap, at}

const recorder = new Recorder((on) => {
  $('btn-record').classList.toggle('recording', on);
  $('btn-record').textContent = on ? '■ Stop & save' : '● Record';
});

function pipelineMs(msg) {
  // realtime.pipeline reports capture-to-output as `latency`; other sources may send `total`.
  const t = msg.timings_ms || {};
  if (typeof t.latency === 'number') return t.latency;
  if (typeof t.total === 'number') return t.total;
  return Object.values(t).reduce((a, b) => a + (typeof b === 'number' ? b : 0), 0);
}

const conn = new Connection({
  onState: (state, detail) => {
    $('conn-state').textContent = detail ? `${state} (${detail})` : state;
    $('conn-dot').className = `dot ${state === 'live' ? 'live' : state === 'reconnecting' ? 'down' : 'connecting'}`;
    if (state === 'live') $('auth').hidden = true;
  },
  onHello: (msg, text) => {
    hello = msg;
    view.setSkeleton(msg);
    recorder.setHello(text);
    stats.lastIndex = null;
    stats.serverDroppedBase = stats.serverDropped;  // the server's count restarts per connection
  },
  onFrame: (msg, text, receivedAt, receivedWall) => {
    stats.framesReceived++;
    Stats.push(stats.received, receivedAt);
    if (stats.lastIndex !== null && msg.index > stats.lastIndex + 1) stats.gapDropped += msg.index - stats.lastIndex - 1;
    stats.lastIndex = msg.index;
    if (pending) stats.superseded++;
    const transit = typeof msg.pub_ms === 'number'
      ? receivedWall + conn.clockOffsetMs - msg.pub_ms : null;
    pending = { msg, receivedAt, transit, pipeline: pipelineMs(msg) };
    recorder.addFrame(text);
  },
  onStats: (msg) => {
    stats.serverDropped = (stats.serverDroppedBase ?? 0) + msg.dropped;
  },
  onThumb: (index, blob) => {
    stats.thumbsReceived++;
    if (!pipOn) return;
    createImageBitmap(blob).then((bitmap) => {
      thumb?.bitmap.close();
      thumb = { bitmap, at: performance.now(), index };
      if (lastFrame) drawPip(lastFrame);
    }).catch(() => {});
  },
  onAuthRequired: (text) => {
    $('auth-msg').textContent = text;
    $('auth').hidden = false;
    $('auth-token').focus();
  },
});

$('auth').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = $('auth-token').value;
  if (token) conn.authenticate(token);
  $('auth-token').value = '';
});
$('btn-record').addEventListener('click', () => (recorder.active ? recorder.stop() : recorder.start()));
$('btn-follow').addEventListener('click', (e) => {
  view.follow = !view.follow;
  e.currentTarget.classList.toggle('on', view.follow);
});
$('btn-reset').addEventListener('click', () => { view.resetView(); view.clearTrail(); });
$('btn-pip').addEventListener('click', (e) => {
  pipOn = !pipOn;
  e.currentTarget.classList.toggle('on', pipOn);
  $('pip').hidden = !pipOn;
  conn.setThumbs(pipOn);
  if (pipOn && lastFrame) drawPip(lastFrame);
});

function drawPip(msg) {
  const cv = $('pip'), ctx = cv.getContext('2d');
  const [w, h] = msg.image_size || [cv.width, cv.height];
  const scale = Math.min(cv.width / Math.max(1, w), cv.height / Math.max(1, h));
  const ox = (cv.width - w * scale) / 2, oy = (cv.height - h * scale) / 2;
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, cv.width, cv.height);
  // The thumbnail already carries the source's 2D overlay; without one, draw the keypoints.
  if (thumb && performance.now() - thumb.at < 2000) {
    ctx.drawImage(thumb.bitmap, ox, oy, w * scale, h * scale);
    return;
  }
  if (!hello) return;
  const side = view.jointSide;
  ctx.lineWidth = 2;
  for (const person of peopleOf(msg)) {
    const p = person.joints_2d_px;
    if (!Array.isArray(p)) continue;
    const cols = personColors(person.track_id);
    for (const [a, b] of hello.bones) {
      if (!p[a]?.every(Number.isFinite) || !p[b]?.every(Number.isFinite)) continue;
      ctx.strokeStyle = `#${cols[side[b]].toString(16).padStart(6, '0')}`;
      ctx.beginPath();
      ctx.moveTo(ox + p[a][0] * scale, oy + p[a][1] * scale);
      ctx.lineTo(ox + p[b][0] * scale, oy + p[b][1] * scale);
      ctx.stroke();
    }
  }
}

function peopleLine(msg) {
  if (!msg) return '';
  const ids = peopleOf(msg).map((p) => p.track_id);
  if (!ids.length) return 'no person in view';
  return ids.length > 1 || ids[0] !== 0 ? `${ids.length} ${ids.length > 1 ? 'people' : 'person'}: id ${ids.join(', ')}` : '';
}

function updateHud() {
  const s = stats.summary();
  const fmt = (v) => (v === null || v === undefined ? '-' : v.toFixed(1));
  $('hud-fps').textContent = s.renderFps;
  $('hud-stream').textContent = s.streamFps;
  $('hud-latency').textContent = fmt(Stats.pct(stats.total.slice(-60), 50));
  $('hud-browser').textContent = fmt(Stats.pct(stats.browser.slice(-60), 50));
  $('hud-dropped').textContent = `${s.dropped}${s.serverDropped ? ` (server ${s.serverDropped})` : ''}`;
  $('hud-index').textContent = lastFrame ? lastFrame.index : '-';
  $('hud-person').textContent = peopleLine(lastFrame);
}
setInterval(updateHud, 250);

let justDrawn = null;        // frame drawn in the previous animation frame

function loop() {
  requestAnimationFrame(loop);
  if (justDrawn) { Stats.push(stats.presented, performance.now() - justDrawn.receivedAt); justDrawn = null; }
  const frame = pending;
  pending = null;
  if (frame) {
    lastFrame = frame.msg;
    view.setFrame(frame.msg);
    lastWorld = view.world;
  }
  const t0 = performance.now();
  view.render();
  const now = performance.now();
  Stats.push(stats.renderMs, now - t0);
  Stats.push(stats.renders, now);
  stats.rendersTotal++;
  if (frame) {
    stats.framesDrawn++;
    const browser = now - frame.receivedAt;
    Stats.push(stats.browser, browser);
    if (frame.transit !== null) {
      Stats.push(stats.transit, frame.transit);
      Stats.push(stats.total, frame.pipeline + frame.transit + browser);
    }
    if (pipOn) drawPip(frame.msg);
    justDrawn = frame;
  }
}

window.posestream = {
  view, conn, recorder, toWorld,
  jointPositions: (trackId) => view.jointPositions(trackId),
  bonePositions: (trackId) => view.bonePositions(trackId),
  peoplePositions: () => view.peoplePositions(),
  labelPositions: () => view.labelPositions(),
  get lastFrameIndex() { return lastFrame ? lastFrame.index : null; },
  get lastFrame() { return lastFrame; },
  get lastWorld() { return lastWorld; },
  get thumbIndex() { return thumb ? thumb.index : null; },
  get state() { return conn.state; },
  get connects() { return conn.connects; },
  get antialias() { return view.antialias; },
  stats: () => stats.summary(),
  resetStats: () => stats.reset(),
  latencies: () => ({ browser: [...stats.browser], total: [...stats.total] }),
  recordingText: () => recorder.text(),
};

conn.connect();
requestAnimationFrame(loop);
