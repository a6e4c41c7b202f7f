"""HyDFS: the hybrid distributed file system on the consistent-hash ring."""
