"""The text family's own callbacks."""
