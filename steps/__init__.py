"""One builder per SageMaker pipeline step: pure functions of the config that return SDK step objects."""
