"""`server.workers: N`: one supervisor process and N worker daemons serving one port."""
