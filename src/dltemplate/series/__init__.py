"""The series family: its own data modules, nets and callbacks.

Everything here is used by the series family only; code two families share lives in the core folders."""
