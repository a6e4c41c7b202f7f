"""A job's states: starting (tasks being placed), running, stopping (`stop` asked: sources
read nothing new, what they read goes on to DEST), then done, stopped or failed."""

STARTING, RUNNING, STOPPING = "starting", "running", "stopping"
DONE, STOPPED, FAILED = "done", "stopped", "failed"
ENDED = (DONE, STOPPED, FAILED)
STATES = (STARTING, RUNNING, STOPPING) + ENDED
