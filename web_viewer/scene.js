// The three.js scene: skeleton (instanced joints and bones coloured left/right/centre), ground
// grid, root trajectory trail, OrbitControls.
//
// World frame: metres, y up. A camera-space point (x right, y down, z forward, mm) maps to
// world (x / 1000, -y / 1000, -z / 1000), so the default three.js camera looking down -Z sees
// what the real camera saw. See `toWorld` for how the root is placed.
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

export const COLORS = { left: 0x3b82f6, right: 0xef4444, centre: 0xd1d5db, trail: 0xfacc15 };
const DEFAULT_ROOT_MM = [0, 0, 3000];
const TRAIL_POINTS = 600;
const ANKLES = [3, 6];

const finite3 = (p) => Array.isArray(p) && p.length === 3 && p.every((v) => typeof v === 'number' && Number.isFinite(v));

/** Frame message -> 17 world positions ([x, y, z] metres, or null for unknown joints).
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
    this.setSkeleton({ bones: [[0, 1], [1, 2], [2, 3], [0, 4], [4, 5], [5, 6], [0, 7], [7, 8], [8, 9], [9, 10],
      [8, 11], [11, 12], [12, 13], [8, 14], [14, 15], [15, 16]], left_joints: [4, 5, 6, 11, 12, 13],
    right_joints: [1, 2, 3, 14, 15, 16], joint_names: [] });

    const trailGeom = new THREE.BufferGeometry();
    this.trailPositions = new Float32Array(TRAIL_POINTS * 3);
    trailGeom.setAttribute('position', new THREE.BufferAttribute(this.trailPositions, 3));
    trailGeom.setDrawRange(0, 0);
    this.trail = new THREE.Line(trailGeom, new THREE.LineBasicMaterial({ color: COLORS.trail }));
    this.trail.frustumCulled = false;
    this.trailCount = 0;
    this.scene.add(this.trail);

    this.follow = true;
    this.hasView = false;
    this.lastRoot = null;
    this.resetView();
    this.resize();
    window.addEventListener('resize', () => this.resize());
  }

  /** Build the instanced joints/bones from the hello message. */
  setSkeleton(hello) {
    const n = 17;
    const bones = hello.bones;
    const sameBones = JSON.stringify(bones) === JSON.stringify(this.bones);
    this.jointNames = hello.joint_names || [];
    if (sameBones && this.jointsMesh) return;
    this.bones = bones;
    const left = new Set(hello.left_joints || []);
    const right = new Set(hello.right_joints || []);
    this.jointSide = Array.from({ length: n }, (_, i) => (left.has(i) ? 'left' : right.has(i) ? 'right' : 'centre'));
    if (this.jointsMesh) { this.scene.remove(this.jointsMesh); this.scene.remove(this.bonesMesh); }
    const mat = new THREE.MeshLambertMaterial();
    this.jointsMesh = new THREE.InstancedMesh(new THREE.SphereGeometry(0.028, 14, 10), mat, n);
    this.bonesMesh = new THREE.InstancedMesh(new THREE.CylinderGeometry(0.014, 0.014, 1, 10), mat.clone(), bones.length);
    const c = new THREE.Color();
    for (let i = 0; i < n; i++) this.jointsMesh.setColorAt(i, c.setHex(COLORS[this.jointSide[i]]));
    bones.forEach(([, child], b) => this.bonesMesh.setColorAt(b, c.setHex(COLORS[this.jointSide[child]])));
    for (const m of [this.jointsMesh, this.bonesMesh]) {
      m.frustumCulled = false;
      m.visible = false;
      m.instanceMatrix.setUsage(THREE.DynamicDrawUsage);
      this.scene.add(m);
    }
    this.world = null;
  }

  /** Put the skeleton of one frame message into the scene. Returns false when nothing to show. */
  setFrame(msg) {
    const world = toWorld(msg);
    this.world = world;
    if (!world) {
      this.jointsMesh.visible = false;
      this.bonesMesh.visible = false;
      return false;
    }
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

    // Floor: just under the lowest ankle; drops at once, rises slowly (jumps do not lift it).
    const ankleYs = ANKLES.map((i) => world[i]?.[1]).filter((y) => y !== undefined);
    if (ankleYs.length) {
      const lowest = Math.min(...ankleYs) - 0.06;
      this.floorY = this.floorY === null || lowest < this.floorY ? lowest : this.floorY + (lowest - this.floorY) * 0.002;
      this.grid.position.y = this.floorY;
    }
    // Keep the 12 m grid under the person (snapped to whole cells so the lines do not slide).
    this.grid.position.x = Math.round(world[0][0] * 2) / 2;
    this.grid.position.z = Math.round(world[0][2] * 2) / 2;
    const root = world[0];
    this.pushTrail(root[0], (this.floorY ?? root[1]) + 0.003, root[2]);
    if (!this.hasView) { this.hasView = true; this.resetView(root); }
    else if (this.follow && this.lastRoot) {
      const d = new THREE.Vector3(root[0] - this.lastRoot[0], 0, root[2] - this.lastRoot[2]);
      this.camera.position.add(d);
      this.controls.target.add(d);
    }
    this.lastRoot = root;
    return true;
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

  /** Look at the person from between the real camera and them, a little to the side and above. */
  resetView(root = this.lastRoot) {
    const r = root || [0, 0, -DEFAULT_ROOT_MM[2] / 1000];
    this.controls.target.set(r[0], r[1], r[2]);
    this.camera.position.set(r[0] + 1.6, r[1] + 0.9, r[2] + 2.6);
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

  /** Test hook: the joint positions as drawn (read back from the instance matrices), metres. */
  jointPositions() {
    if (!this.jointsMesh.visible) return null;
    const m = new THREE.Matrix4(), p = new THREE.Vector3(), q = new THREE.Quaternion(), s = new THREE.Vector3();
    return Array.from({ length: this.jointsMesh.count }, (_, i) => {
      this.jointsMesh.getMatrixAt(i, m);
      m.decompose(p, q, s);
      return s.x === 0 ? null : [p.x, p.y, p.z];
    });
  }

  /** Test hook: bone endpoints as drawn: [[x, y, z] bottom, [x, y, z] top] per bone. */
  bonePositions() {
    if (!this.bonesMesh.visible) return null;
    const m = new THREE.Matrix4(), a = new THREE.Vector3(), b = new THREE.Vector3();
    return this.bones.map((_, k) => {
      this.bonesMesh.getMatrixAt(k, m);
      a.set(0, -0.5, 0).applyMatrix4(m); b.set(0, 0.5, 0).applyMatrix4(m);
      return [a.toArray(), b.toArray()];
    });
  }
}
