"""RainStorm: stream processing with exactly-once results on HyDFS."""
