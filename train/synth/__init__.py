"""Synthetic people: a posable CC0 MakeHuman body rendered with a numba z-buffer rasteriser,
posed from Human3.6M joint positions or Bandai-Namco mocap, cropped with engines.crop and
written as labelled npz shards (see docs/synthetic.md)."""
