"""Diff desired against live into ordered, typed changes; render them; save and load plan files."""
