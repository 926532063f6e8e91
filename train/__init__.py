"""posestream training: datasets, training loops, evaluation and reports."""
