// Copies the few three.js files the viewer needs from node_modules/ into vendor/, so the
// Python server serves them from disk (no CDN, nothing fetched at run time, node_modules
// not needed at run time). Runs automatically after `npm ci --prefix web_viewer`.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'node_modules', 'three');
const dst = join(here, 'vendor', 'three');
const files = [
  ['build/three.module.js', 'three.module.js'],
  ['build/three.core.js', 'three.core.js'],
  ['examples/jsm/controls/OrbitControls.js', 'addons/controls/OrbitControls.js'],
  ['LICENSE', 'LICENSE'],
];
for (const [from, to] of files) {
  mkdirSync(dirname(join(dst, to)), { recursive: true });
  copyFileSync(join(src, from), join(dst, to));
}
const version = JSON.parse(readFileSync(join(src, 'package.json'), 'utf8')).version;
writeFileSync(join(dst, 'VERSION'), version + '\n');
console.log(`vendored three.js ${version} into ${dst}`);
