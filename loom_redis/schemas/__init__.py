"""Import paths of Loom's `loom.schemas` package, kept so Loom code runs unchanged."""
