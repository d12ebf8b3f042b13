"""Deployment: model registry actions, endpoints, batch transform, the model server and infrastructure."""
