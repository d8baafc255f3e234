"""One thin entry point per MLproject step: parse arguments, call the agnews library, log to MLflow."""
