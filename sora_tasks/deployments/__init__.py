"""Ready-made Prefect deployments of the flows (see also prefect.yaml)."""
