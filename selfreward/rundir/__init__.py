"""The run directory: atomic artifacts, stage manifests, resume, run.json."""
