"""PyTorch Lightning + Hydra template: five task families, one generic training loop."""
