"""The series family's networks: plain `nn.Module`s, no Lightning import."""
