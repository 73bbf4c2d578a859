"""One dashboard for a fleet: a daemon reports its calls to a central patterd, which also takes Patter's ingest."""
