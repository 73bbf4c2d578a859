"""Providers: I/O adapters, one module per vendor, each exporting ProviderSpecs."""
