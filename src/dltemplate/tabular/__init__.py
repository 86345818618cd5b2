"""The tabular family: its own data modules, nets and callbacks.

Everything here is used by the tabular family only; code two families share lives in the core folders."""
