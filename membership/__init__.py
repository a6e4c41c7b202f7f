"""Group membership: SWIM-style Ping-Ack failure detection, with optional suspicion."""
