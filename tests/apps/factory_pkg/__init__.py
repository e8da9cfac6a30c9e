"""A factory-pattern package: the extension and its tasks exist before any app."""
