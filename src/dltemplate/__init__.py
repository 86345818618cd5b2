"""PyTorch Lightning + Hydra template: five task families, one generic training loop."""

from dltemplate import resolvers

resolvers.register()  # before any config is composed: conf/ uses ${dltemplate.run_label:...}
