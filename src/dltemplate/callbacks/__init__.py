"""Callbacks that add what a practitioner looks at beyond scalars, for every logger (see `media`)."""
