"""Peer model servers for the serving benchmark, each calling the artefact's own inference.py hooks."""
