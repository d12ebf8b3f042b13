"""Holds sitecustomize.py, copied onto a job's PYTHONPATH; never imported by the engine itself."""
