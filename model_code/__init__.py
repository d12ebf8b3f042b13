"""Model code run inside SageMaker containers (or the local engine's sandbox); imports nothing else."""
