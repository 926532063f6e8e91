"""Reader for rendered synthetic shards (train.synth.shards): a manifest.json plus
shard_XXXXX.npz files holding the arrays of train.synth.samples.FIELD_DOC.

    ds = SynthDataset("data_out/synth_s9")
    len(ds); ds[i] -> dict of one sample's arrays; ds.labels() -> all label arrays (no images)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engines.errors import UserError

MANIFEST = "manifest.json"


class SynthDataset:
    """Indexable over the shards present (an unfinished render set is readable)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        mpath = self.root / MANIFEST
        if not mpath.is_file():
            raise UserError(f"no {MANIFEST} in {self.root}: not a synthetic render folder")
        self.manifest = json.loads(mpath.read_text())
        shard_size = int(self.manifest["shard_size"])
        n = int(self.manifest["num_samples"])
        self.files: list[Path] = []
        self.counts: list[int] = []
        listed = {e["file"]: int(e["count"]) for e in self.manifest.get("shards", [])}
        for k in range((n + shard_size - 1) // shard_size):
            p = self.root / f"shard_{k:05d}.npz"
            if not p.is_file():
                continue
            want = min(shard_size, n - k * shard_size)
            count = listed.get(p.name)
            if count is None:  # not finalised yet: read its index array (per frame for clips)
                with np.load(p) as z:
                    count = len(np.unique(z["index"]))
            if count != want:
                continue  # a last shard from a smaller run, about to be re-rendered
            self.files.append(p)
            self.counts.append(count)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def shard(self, k: int) -> dict[str, np.ndarray]:
        """All arrays of shard k (the shard is cached: sequential access reads each once)."""
        if self._cache is None or self._cache[0] != k:
            with np.load(self.files[k]) as z:
                self._cache = (k, {key: z[key] for key in z.files})
        return self._cache[1]

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        d = self.shard(k)
        return {key: v[i - self.offsets[k]] for key, v in d.items()}

    def labels(self, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Concatenate every non-image array (or just `keys`) over all shards."""
        parts: dict[str, list[np.ndarray]] = {}
        for p in self.files:
            with np.load(p) as z:
                for key in (keys or [k for k in z.files if k != "images"]):
                    parts.setdefault(key, []).append(z[key])
        return {k: np.concatenate(v) for k, v in parts.items()}
