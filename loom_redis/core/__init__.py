"""Import paths of Loom's `loom.core` package, kept so Loom code runs unchanged."""
