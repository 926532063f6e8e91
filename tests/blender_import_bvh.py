"""Run with Blender's Python (the `bpy` wheel: `python tests/blender_import_bvh.py FILE.bvh`,
with bpy importable; or `blender -b --factory-startup --python tests/blender_import_bvh.py --
FILE.bvh`). Imports FILE with Blender's stock BVH importer as a user would (File > Import >
Motion Capture (.bvh), "Update Scene FPS" and "Update Scene Duration" ticked), sets the
scene's frame range to the action's (the importer only ever extends the scene; see
docs/mocap.md), and prints one line `BLENDER_BVH {json}` with what tests/test_bvh.py checks:
    bones, bone_names, frames (action frame range length), scene_start, scene_end, fps,
    feet_min_z (per frame: the lowest head/tail of the foot, toe and heel bones, metres),
    up (per frame: the unit vector hips -> head, world), facing (per frame: the unit
    horizontal direction the hips face, world; Blender's front view looks along +Y).
Blender converts BVH's Y-up into its Z-up; lengths in the file's unit times `scale` (argument 2,
default 1.0: 0.01 for a centimetre file gives metres)."""
import json
import sys

import bpy
from mathutils import Vector

args = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
path = args[0]
scale = float(args[1]) if len(args) > 1 else 1.0
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_anim.bvh(filepath=path, global_scale=scale, update_scene_fps=True, update_scene_duration=True)
arm = next(o for o in bpy.data.objects if o.type == "ARMATURE")
scene = bpy.context.scene
start, end = (int(round(v)) for v in arm.animation_data.action.frame_range)
scene.frame_start, scene.frame_end = start, end  # the documented step after the import

names = [b.name for b in arm.data.bones]
hips = "Hips" if "Hips" in names else "pelvis"
head = "Head" if "Head" in names else "head"
left, right = ("LeftUpLeg", "RightUpLeg") if "LeftUpLeg" in names else ("l_hip", "r_hip")
feet = [n for n in names if any(k in n for k in ("Foot", "ToeBase", "Heel", "ankle"))]
out = {"bones": len(names), "bone_names": names, "frames": end - start + 1, "scene_start": scene.frame_start,
       "scene_end": scene.frame_end, "fps": scene.render.fps / scene.render.fps_base,
       "feet_min_z": [], "up": [], "facing": []}
for f in range(start, end + 1):
    scene.frame_set(f)
    mw = arm.matrix_world
    pb = arm.pose.bones
    out["feet_min_z"].append(min(min((mw @ pb[n].head).z, (mw @ pb[n].tail).z) for n in feet))
    up = (mw @ pb[head].head) - (mw @ pb[hips].head)
    out["up"].append(list(up.normalized()))
    side = (mw @ pb[left].head) - (mw @ pb[right].head)  # the person's left
    facing = side.cross(Vector((0.0, 0.0, 1.0)))  # left x up = forward
    facing.z = 0.0
    out["facing"].append(list(facing.normalized()))
print("BLENDER_BVH " + json.dumps(out))
