"""LightningModules, one per objective, each generic over an injected `net`."""
