"""Trusted reference implementations the judge compares against. Never visible to
student code; imports nothing of the project."""
