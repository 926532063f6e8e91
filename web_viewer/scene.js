// The three.js scene: every person of a frame (instanced joints and bones in the colour of
// their track id, left limbs lighter and right limbs darker, the id on a label above the head,
// a root trail on the ground), a ground grid, OrbitControls.
//
// World frame: metres, y up. A camera-space point (x right, y down, z forward, mm) maps to
// world (x / 1000, -y / 1000, -z / 1000), so the default three.js camera looking down -Z sees
// what the real camera saw. See `toWorld` for how each person's root is placed.
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

// One colour per track id, cycling (the same palette as the Open3D window).
export const PERSON_COLORS = [0x3b82f6, 0xf97316, 0x22c55e, 0xd946ef, 0xeab308, 0x06b6d4, 0xef4444, 0x8b5cf6];
const LEFT_MIX = 0.45;   // left limbs: this far towards white
const RIGHT_MIX = 0.4;   // right limbs: this far towards black
export const COLORS = { trail: 0xfacc15 };
const DEFAULT_ROOT_MM = [0, 0, 3000];
const TRAIL_POINTS = 600;
const ANKLES = [3, 6];
const LABEL_SIZE_M = 0.2;
const LABEL_ABOVE_HEAD_M = 0.22;
const FORGET_AFTER_FRAMES = 300;  // a person's meshes are freed after this many frames unseen

const finite3 = (p) => Array.isArray(p) && p.length === 3 && p.every((v) => typeof v === 'number' && Number.isFinite(v));

/** Frame message -> the people to draw: the frame itself (the person with the lowest track
 * id) and its `others`, the valid ones, each with a `track_id` (0 when the sender has none). */
export function peopleOf(msg) {
  const all = [msg, ...(Array.isArray(msg.others) ? msg.others : [])];
  return all.filter((p) => p && p.valid).map((p) => ({ ...p, track_id: Number.isInteger(p.track_id) ? p.track_id : 0 }));
}

/** Colours of a track id as CSS-style hex numbers: { centre, left, right }. */
export function personColors(trackId) {
  const base = new THREE.Color(PERSON_COLORS[((trackId % PERSON_COLORS.length) + PERSON_COLORS.length) % PERSON_COLORS.length]);
  return {
    centre: base.getHex(),
    left: base.clone().lerp(new THREE.Color(0xffffff), LEFT_MIX).getHex(),
    right: base.clone().multiplyScalar(1 - RIGHT_MIX).getHex(),
  };
}

/** Person (or frame) message -> 17 world positions ([x, y, z] metres, or null for unknown joints).
 * Root placement: translation_mm when known, else joints_mm[pelvis] when the joints are not
 * root-relative, else 3 m in front of the camera. joint_world = root + (joint - pelvis). */
export function toWorld(msg) {
  const joints = msg.joints_mm;
  if (!msg.valid || !Array.isArray(joints) || joints.length !== 17 || !finite3(joints[0])) return null;
  const pelvis = joints[0];
  let root = DEFAULT_ROOT_MM;
  if (finite3(msg.translation_mm)) root = msg.translation_mm;
  else if (Math.hypot(pelvis[0], pelvis[1], pelvis[2]) > 1) root = pelvis;
  return joints.map((j) => (finite3(j)
    ? [(root[0] + j[0] - pelvis[0]) / 1000, -(root[1] + j[1] - pelvis[1]) / 1000, -(root[2] + j[2] - pelvis[2]) / 1000]
    : null));
}

function preferAntialias() {
  // MSAA is costly on the SwiftShader software rasteriser (headless Chromium): off there.
  try {
    const gl = document.createElement('canvas').getContext('webgl2');
    const ext = gl && gl.getExtension('WEBGL_debug_renderer_info');
    const name = ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : '';
    gl?.getExtension('WEBGL_lose_context')?.loseContext();
    return !/swiftshader|llvmpipe|software/i.test(String(name));
  } catch { return true; }
}

function labelTexture(text, color) {
  const c = document.createElement('canvas');
  c.width = 128; c.height = 128;
  const g = c.getContext('2d');
  g.fillStyle = `#${new THREE.Color(color).getHexString()}`;
  g.beginPath(); g.arc(64, 64, 60, 0, 2 * Math.PI); g.fill();
  g.fillStyle = '#ffffff';
  g.font = `bold ${text.length > 2 ? 52 : 72}px system-ui, sans-serif`;
  g.textAlign = 'center'; g.textBaseline = 'middle';
  g.fillText(text, 64, 68);
  const tex = new THREE.CanvasTexture(c);
  tex.colorSpace = THREE.SRGBColorSpace;
  return tex;
}

/** One person's meshes: joints, bones, id label and trail. */
class PersonView {
  constructor(scene, bones, jointSide, trackId) {
    this.scene = scene;
    this.bones = bones;
    this.trackId = trackId;
    const cols = personColors(trackId);
    const mat = new THREE.MeshLambertMaterial();
    this.jointsMesh = new THREE.InstancedMesh(new THREE.SphereGeometry(0.028, 14, 10), mat, 17);
    this.bonesMesh = new THREE.InstancedMesh(new THREE.CylinderGeometry(0.016, 0.016, 1, 10), mat.clone(), bones.length);
    const c = new THREE.Color();
    for (let i = 0; i < 17; i++) this.jointsMesh.setColorAt(i, c.setHex(cols[jointSide[i]]));
    bones.forEach(([, child], b) => this.bonesMesh.setColorAt(b, c.setHex(cols[jointSide[child]])));
    for (const m of [this.jointsMesh, this.bonesMesh]) {
      m.frustumCulled = false;
      m.visible = false;
      m.instanceMatrix.setUsage(THREE.DynamicDrawUsage);
      scene.add(m);
    }
    this.label = new THREE.Sprite(new THREE.SpriteMaterial({ map: labelTexture(String(trackId), cols.centre), depthTest: false }));
    this.label.scale.set(LABEL_SIZE_M, LABEL_SIZE_M, 1);
    this.label.renderOrder = 10;
    this.label.visible = false;
    scene.add(this.label);
    const trailGeom = new THREE.BufferGeometry();
    this.trailPositions = new Float32Array(TRAIL_POINTS * 3);
    trailGeom.setAttribute('position', new THREE.BufferAttribute(this.trailPositions, 3));
    trailGeom.setDrawRange(0, 0);
    this.trail = new THREE.Line(trailGeom, new THREE.LineBasicMaterial({ color: cols.centre }));
    this.trail.frustumCulled = false;
    this.trailCount = 0;
    scene.add(this.trail);
    this.world = null;
    this.lastSeen = 0;
  }

  set(world) {
    this.world = world;
    const m = new THREE.Matrix4();
    const hidden = new THREE.Matrix4().makeScale(0, 0, 0);
    world.forEach((p, i) => this.jointsMesh.setMatrixAt(i, p ? m.makeTranslation(p[0], p[1], p[2]) : hidden));
    const a = new THREE.Vector3(), b = new THREE.Vector3(), dir = new THREE.Vector3(), mid = new THREE.Vector3();
    const q = new THREE.Quaternion(), s = new THREE.Vector3(), up = new THREE.Vector3(0, 1, 0);
    this.bones.forEach(([p, c], k) => {
      if (!world[p] || !world[c]) { this.bonesMesh.setMatrixAt(k, hidden); return; }
      a.fromArray(world[p]); b.fromArray(world[c]);
      dir.subVectors(b, a);
      const len = dir.length();
      q.setFromUnitVectors(up, len > 1e-9 ? dir.divideScalar(len) : up);
      s.set(1, len, 1);
      this.bonesMesh.setMatrixAt(k, m.compose(mid.addVectors(a, b).multiplyScalar(0.5), q, s));
    });
    this.jointsMesh.instanceMatrix.needsUpdate = true;
    this.bonesMesh.instanceMatrix.needsUpdate = true;
    this.jointsMesh.visible = true;
    this.bonesMesh.visible = true;
    const top = world.filter((p) => p).reduce((best, p) => (p[1] > best[1] ? p : best));
    this.label.position.set(top[0], top[1] + LABEL_ABOVE_HEAD_M, top[2]);
    this.label.visible = true;
  }

  hide() {
    this.world = null;
    this.jointsMesh.visible = false;
    this.bonesMesh.visible = false;
    this.label.visible = false;
  }

  pushTrail(x, y, z) {
    const P = this.trailPositions;
    if (this.trailCount === TRAIL_POINTS) { P.copyWithin(0, 3); this.trailCount--; }
    P.set([x, y, z], this.trailCount * 3);
    this.trailCount++;
    this.trail.geometry.setDrawRange(0, this.trailCount);
    this.trail.geometry.attributes.position.needsUpdate = true;
  }

  clearTrail() { this.trailCount = 0; this.trail.geometry.setDrawRange(0, 0); }

  dispose() {
    for (const o of [this.jointsMesh, this.bonesMesh, this.label, this.trail]) {
      this.scene.remove(o);
      o.geometry?.dispose();
      const mats = Array.isArray(o.material) ? o.material : [o.material];
      mats.forEach((mt) => { mt.map?.dispose(); mt.dispose(); });
    }
  }
}

export class SkeletonView {
  constructor(container) {
    this.container = container;
    const aa = new URLSearchParams(location.search).get('aa');
    this.antialias = aa === null ? preferAntialias() : aa === '1';
    this.renderer = new THREE.WebGLRenderer({ antialias: this.antialias });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    container.appendChild(this.renderer.domElement);

    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(0x14161a);
    this.camera = new THREE.PerspectiveCamera(50, 1, 0.05, 100);
    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.enableDamping = true;
    this.scene.add(new THREE.HemisphereLight(0xffffff, 0x404050, 2.2));
    const sun = new THREE.DirectionalLight(0xffffff, 1.5);
    sun.position.set(2, 4, 3);
    this.scene.add(sun);

    this.grid = new THREE.GridHelper(12, 24, 0x7a818c, 0x464c57);
    this.grid.position.set(0, -0.95, -DEFAULT_ROOT_MM[2] / 1000);  // a standing person's floor until frames say
    this.scene.add(this.grid);
    this.floorY = null;

    this.jointNames = [];
    this.bones = [];
    this.jointSide = [];
    this.persons = new Map();   // track id -> PersonView
    this.frameCount = 0;
    this.setSkeleton({ bones: [[0, 1], [1, 2], [2, 3], [0, 4], [4, 5], [5, 6], [0, 7], [7, 8], [8, 9], [9, 10],
      [8, 11], [11, 12], [12, 13], [8, 14], [14, 15], [15, 16]], left_joints: [4, 5, 6, 11, 12, 13],
    right_joints: [1, 2, 3, 14, 15, 16], joint_names: [] });

    this.follow = true;
    this.hasView = false;
    this.lastCentre = null;
    this.world = null;          // the primary person's world positions (lowest track id)
    this.primaryId = null;
    this.resetView();
    this.resize();
    window.addEventListener('resize', () => this.resize());
  }

  /** Skeleton description from the hello message (bones, sides); rebuilds the people's meshes
   * when it changed. */
  setSkeleton(hello) {
    const bones = hello.bones;
    const sameBones = JSON.stringify(bones) === JSON.stringify(this.bones);
    this.jointNames = hello.joint_names || [];
    if (sameBones && this.jointSide.length) return;
    this.bones = bones;
    const left = new Set(hello.left_joints || []);
    const right = new Set(hello.right_joints || []);
    this.jointSide = Array.from({ length: 17 }, (_, i) => (left.has(i) ? 'left' : right.has(i) ? 'right' : 'centre'));
    for (const p of this.persons.values()) p.dispose();
    this.persons.clear();
    this.world = null;
  }

  person(trackId) {
    let p = this.persons.get(trackId);
    if (!p) { p = new PersonView(this.scene, this.bones, this.jointSide, trackId); this.persons.set(trackId, p); }
    return p;
  }

  /** Put every person of one frame message into the scene. Returns false when nobody to show. */
  setFrame(msg) {
    this.frameCount++;
    const shown = [];
    for (const pm of peopleOf(msg)) {
      const world = toWorld(pm);
      if (!world) continue;
      const p = this.person(pm.track_id);
      p.set(world);
      p.lastSeen = this.frameCount;
      shown.push(p);
    }
    for (const [id, p] of this.persons) {
      if (shown.includes(p)) continue;
      p.hide();
      if (this.frameCount - p.lastSeen > FORGET_AFTER_FRAMES) { p.dispose(); this.persons.delete(id); }
    }
    shown.sort((a, b) => a.trackId - b.trackId);
    this.world = shown.length ? shown[0].world : null;
    this.primaryId = shown.length ? shown[0].trackId : null;
    if (!shown.length) return false;

    // Floor: just under the lowest ankle of anyone; drops at once, rises slowly (jumps do not lift it).
    const ankleYs = shown.flatMap((p) => ANKLES.map((i) => p.world[i]?.[1]).filter((y) => y !== undefined));
    if (ankleYs.length) {
      const lowest = Math.min(...ankleYs) - 0.06;
      this.floorY = this.floorY === null || lowest < this.floorY ? lowest : this.floorY + (lowest - this.floorY) * 0.002;
      this.grid.position.y = this.floorY;
    }
    const roots = shown.map((p) => p.world[0]);
    const centre = [0, 1, 2].map((k) => roots.reduce((s, r) => s + r[k], 0) / roots.length);
    // Keep the 12 m grid under the people (snapped to whole cells so the lines do not slide).
    this.grid.position.x = Math.round(centre[0] * 2) / 2;
    this.grid.position.z = Math.round(centre[2] * 2) / 2;
    for (const p of shown) p.pushTrail(p.world[0][0], (this.floorY ?? p.world[0][1]) + 0.003, p.world[0][2]);
    this.spread = Math.max(0, ...roots.map((r) => Math.hypot(r[0] - centre[0], r[2] - centre[2])));
    if (!this.hasView) { this.hasView = true; this.resetView(centre); }
    else if (this.follow && this.lastCentre) {
      const d = new THREE.Vector3(centre[0] - this.lastCentre[0], 0, centre[2] - this.lastCentre[2]);
      this.camera.position.add(d);
      this.controls.target.add(d);
    }
    this.lastCentre = centre;
    return true;
  }

  clearTrail() { for (const p of this.persons.values()) p.clearTrail(); }

  /** Look at the people from between the real camera and them, a little to the side and
   * above, far enough back for everyone to fit. */
  resetView(centre = this.lastCentre) {
    const r = centre || [0, 0, -DEFAULT_ROOT_MM[2] / 1000];
    const k = 1 + (this.spread || 0) / 1.2;
    this.controls.target.set(r[0], r[1], r[2]);
    this.camera.position.set(r[0] + 1.6 * k, r[1] + 0.9 * k, r[2] + 2.6 * k);
    this.controls.update();
  }

  resize() {
    const w = this.container.clientWidth || window.innerWidth, h = this.container.clientHeight || window.innerHeight;
    this.renderer.setSize(w, h);
    this.camera.aspect = w / Math.max(1, h);
    this.camera.updateProjectionMatrix();
  }

  render() {
    this.controls.update();
    this.renderer.render(this.scene, this.camera);
  }

  /** Test hook: the joint positions as drawn (read back from the instance matrices), metres,
   * of the person with the lowest track id (or of `trackId`); null when not drawn. */
  jointPositions(trackId = this.primaryId) {
    const p = this.persons.get(trackId);
    if (!p || !p.jointsMesh.visible) return null;
    const m = new THREE.Matrix4(), pos = new THREE.Vector3(), q = new THREE.Quaternion(), s = new THREE.Vector3();
    return Array.from({ length: p.jointsMesh.count }, (_, i) => {
      p.jointsMesh.getMatrixAt(i, m);
      m.decompose(pos, q, s);
      return s.x === 0 ? null : [pos.x, pos.y, pos.z];
    });
  }

  /** Test hook: bone endpoints as drawn: [[x, y, z] bottom, [x, y, z] top] per bone. */
  bonePositions(trackId = this.primaryId) {
    const p = this.persons.get(trackId);
    if (!p || !p.bonesMesh.visible) return null;
    const m = new THREE.Matrix4(), a = new THREE.Vector3(), b = new THREE.Vector3();
    return this.bones.map((_, k) => {
      p.bonesMesh.getMatrixAt(k, m);
      a.set(0, -0.5, 0).applyMatrix4(m); b.set(0, 0.5, 0).applyMatrix4(m);
      return [a.toArray(), b.toArray()];
    });
  }

  /** Test hook: {track id: joint positions} of every person drawn. */
  peoplePositions() {
    const out = {};
    for (const [id, p] of this.persons) if (p.jointsMesh.visible) out[id] = this.jointPositions(id);
    return out;
  }

  /** Test hook: {track id: label position [x, y, z]} of every label shown. */
  labelPositions() {
    const out = {};
    for (const [id, p] of this.persons) if (p.label.visible) out[id] = p.label.position.toArray();
    return out;
  }
}
