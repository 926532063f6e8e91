"""posestream engines: the model contract (skeleton, FBI rule, camera math), model
definitions, export and one backend per runtime. Nothing here imports `train` or `realtime`."""
