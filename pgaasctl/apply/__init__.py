"""Carry out a plan on each pair's primary, in order, recording each step in the store."""
