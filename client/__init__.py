"""The `hybridsr` command-line client."""
