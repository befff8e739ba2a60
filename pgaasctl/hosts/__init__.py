"""Hosts: SSH sessions (fabric) with pinned host keys, and the bootstrap path every provider shares."""
