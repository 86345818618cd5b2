"""LightningDataModules, one per modality.

Every data module exposes `dims`, the sizes a net needs (`in_features`, `num_classes`, ...), once
`setup("fit")` has run; the task configs pass them to the net through `${dims.<name>}`.
"""
