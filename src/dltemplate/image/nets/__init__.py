"""The image family's networks: plain `nn.Module`s, no Lightning import."""
