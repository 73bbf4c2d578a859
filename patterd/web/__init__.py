"""The one Starlette app: carrier routes, probes, ops API, dashboard."""
