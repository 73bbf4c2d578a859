"""Beyond one process: signed call tokens and the shared live state of a cluster of replicas (Redis)."""
