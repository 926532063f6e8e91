// The websocket client: connect, authenticate, ping for clock offset, reconnect with
// exponential backoff (0.25 s doubling to 5 s, +-25 % jitter, reset once live).
// Message schema: docs/web_viewer.md.

const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 5000;
const PING_INTERVAL_MS = 2000;
const TOKEN_KEY = 'posestream.token';

export class Connection {
  /** handlers: onState(state, detail), onHello(msg), onFrame(msg, text, receivedAt, receivedWall),
   * onStats(msg), onThumb(index, blob), onAuthRequired(reason). */
  constructor(handlers) {
    this.h = handlers;
    this.ws = null;
    this.attempt = 0;
    this.state = 'idle';
    this.thumbs = false;
    this.clockOffsetMs = 0;     // server wall clock - browser wall clock, from the best ping
    this.bestRtt = Infinity;
    this.connects = 0;
    this.timer = null;
    this.pingTimer = null;
    this.triedStoredToken = false;
  }

  url() {
    const u = new URL('ws', location.href);
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const qs = new URLSearchParams(location.search);
    const token = qs.get('token');
    if (token) u.searchParams.set('token', token);
    if (this.thumbs) u.searchParams.set('thumbs', '1');
    return u.toString();
  }

  setState(state, detail = '') {
    this.state = state;
    this.h.onState?.(state, detail);
  }

  connect() {
    clearTimeout(this.timer);
    this.triedStoredToken = false;
    this.setState('connecting', this.attempt ? `attempt ${this.attempt + 1}` : '');
    let ws;
    try { ws = new WebSocket(this.url()); } catch (e) { this.scheduleReconnect(String(e)); return; }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onmessage = (ev) => this.onMessage(ev);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      clearInterval(this.pingTimer);
      this.ws = null;
      this.scheduleReconnect(ev.code ? `closed ${ev.code}${ev.reason ? ` ${ev.reason}` : ''}` : 'closed');
    };
  }

  scheduleReconnect(reason) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + 0.5 * Math.random()));
    this.attempt++;
    this.setState('reconnecting', `${reason}; retry in ${(delay / 1000).toFixed(1)} s`);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ v: 1, ...obj }));
  }

  authenticate(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    this.send({ type: 'auth', token });
  }

  setThumbs(on) {
    this.thumbs = on;
    this.send({ type: 'subscribe', thumbs: on });
  }

  onMessage(ev) {
    const receivedAt = performance.now();
    const receivedWall = Date.now();  // same clock as the ping/pong offset
    if (typeof ev.data !== 'string') {
      const buf = ev.data;
      if (buf.byteLength < 8) return;
      const head = new DataView(buf);
      if (head.getUint32(0, false) !== 0x50534a31) return;  // "PSJ1"
      this.h.onThumb?.(head.getUint32(4, true), new Blob([buf.slice(8)], { type: 'image/jpeg' }));
      return;
    }
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    switch (msg.type) {
      case 'frame': this.h.onFrame?.(msg, ev.data, receivedAt, receivedWall); break;
      case 'hello':
        this.attempt = 0;
        this.connects++;
        this.setState('live');
        if (this.thumbs) this.send({ type: 'subscribe', thumbs: true });
        clearInterval(this.pingTimer);
        this.ping();
        this.pingTimer = setInterval(() => this.ping(), PING_INTERVAL_MS);
        this.h.onHello?.(msg, ev.data);
        break;
      case 'stats': this.h.onStats?.(msg); break;
      case 'pong': {
        const now = Date.now();
        const rtt = now - msg.t;
        if (rtt >= 0 && rtt <= this.bestRtt * 1.5 + 1) {
          this.bestRtt = Math.min(this.bestRtt, rtt);
          this.clockOffsetMs = msg.server_ms - (msg.t + now) / 2;
        }
        break;
      }
      case 'auth_required': {
        this.setState('auth', 'token required');
        const stored = sessionStorage.getItem(TOKEN_KEY);
        if (stored && !this.triedStoredToken) { this.triedStoredToken = true; this.send({ type: 'auth', token: stored }); }
        else this.h.onAuthRequired?.('This server needs an access token.');
        break;
      }
      case 'auth_ok': this.h.onAuthOk?.(); break;
      case 'error':
        if (msg.code === 'auth_failed') {
          sessionStorage.removeItem(TOKEN_KEY);
          this.h.onAuthRequired?.('Wrong token, try again.');
        } else console.warn('posestream server error', msg.code, msg.message);
        break;
      default: break;
    }
  }

  ping() { this.send({ type: 'ping', t: Date.now() }); }
}
