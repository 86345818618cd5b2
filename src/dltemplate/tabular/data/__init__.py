"""The tabular family's LightningDataModules and readers (see the core `data` package)."""
