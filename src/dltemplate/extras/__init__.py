"""Optional parts: serving, export, hyperparameter search, cross-validation, backtests.

Each is removable: delete its file here, its entry script, its config and its tests (copier.yml `parts`)."""
