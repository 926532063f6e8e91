"""posestream realtime application: sources, threaded pipeline, smoothing, sinks, CLI.
Never imports `train`, and never needs torch unless the torch backend is chosen."""
