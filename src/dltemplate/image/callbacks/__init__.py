"""The image family's own callbacks."""
