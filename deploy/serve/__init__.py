"""The local model server: SageMaker's container contract plus the runtime InvokeEndpoint API, on uvicorn."""
