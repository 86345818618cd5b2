"""Where modules of the package used to live: old module path → new one.

Checkpoints store their run config, and with it the `_target_` of every class they were built
from. When a module moves, checkpoints saved before the move still name its old path; the
allowlist (`registry`) reads such a name as the new one, so they keep loading. Only whole module
paths are mapped, and the class found at the new path is checked exactly as any other.
"""

MOVED: dict[str, str] = {}
