"""Monitoring: the lookup of every node, the agent that keeps it current, and what it records."""
