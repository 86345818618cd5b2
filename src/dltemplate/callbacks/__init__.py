"""Callbacks that add what a practitioner looks at in TensorBoard beyond scalars."""
