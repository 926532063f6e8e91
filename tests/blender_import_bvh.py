"""Run inside Blender: `blender -b --factory-startup --python tests/blender_import_bvh.py -- FILE.bvh`.
Imports the BVH with Blender's stock importer and prints one line
`BLENDER_BVH bones=N frames=F head_above_ankle_m=H` for tests/test_writers.py."""
import builtins
import sys

import bpy

# Debian's blender 3.4 runs on Python 3.11, where its BVH importer's open(..., "rU") fails.
_open = builtins.open
builtins.open = lambda f, mode="r", *a, **k: _open(f, mode.replace("U", ""), *a, **k)

path = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_anim.bvh(filepath=path)
arm = next(o for o in bpy.data.objects if o.type == "ARMATURE")
scene = bpy.context.scene
start, end = arm.animation_data.action.frame_range  # the importer never shortens the scene
scene.frame_set(int(start))
head = arm.matrix_world @ arm.pose.bones["head"].head
ankle = arm.matrix_world @ arm.pose.bones["r_ankle"].head
print(f"BLENDER_BVH bones={len(arm.data.bones)} frames={int(round(end - start)) + 1} "
      f"head_above_ankle_m={head.z - ankle.z:.3f}")
