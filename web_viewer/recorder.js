// Record button: keeps the received messages and saves them as JSON Lines
// (posestream-jsonl-v1: a `recording` header, the `hello`, then `frame` messages exactly as
// received), which `posestream serve FILE` replays.

const MAX_FRAMES = 30 * 60 * 30;  // 30 min at 30 fps (~65 MB), then recording stops by itself

export class Recorder {
  constructor(onChange) {
    this.onChange = onChange;
    this.lines = null;
    this.frames = 0;
    this.hello = null;
  }

  get active() { return this.lines !== null; }

  setHello(text) {
    this.hello = text;
    if (this.active) this.lines.push(text);
  }

  start() {
    const header = { v: 1, type: 'recording', format: 'posestream-jsonl-v1', started: new Date().toISOString(),
      url: location.href.split('?')[0] };
    this.lines = [JSON.stringify(header)];
    if (this.hello) this.lines.push(this.hello);
    this.frames = 0;
    this.onChange?.(true);
  }

  addFrame(text) {
    if (!this.active) return;
    this.lines.push(text);
    if (++this.frames >= MAX_FRAMES) this.stop();
  }

  /** The recording so far as text (test hook). */
  text() { return this.lines ? `${this.lines.join('\n')}\n` : ''; }

  /** Stop and download. Returns the file name (null if nothing was recording). */
  stop() {
    if (!this.active) return null;
    const blob = new Blob([this.text()], { type: 'application/x-ndjson' });
    this.lines = null;
    const stamp = new Date().toISOString().replace(/[:]/g, '-').replace(/\..*$/, '');
    const name = `posestream-${stamp}.jsonl`;
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    this.onChange?.(false);
    return name;
  }
}
