"""Test helpers that are not fixtures: scripted HTTP peers, counting proxies, polling."""
