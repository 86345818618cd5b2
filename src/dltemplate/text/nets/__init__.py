"""The text family's networks: plain `nn.Module`s, no Lightning import."""
