"""Plain `nn.Module` networks. Nothing here imports Lightning: any net can be reused on its own."""
