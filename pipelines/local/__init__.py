"""Local engine: runs the SageMaker pipeline definition on one machine, no Docker, no AWS."""
