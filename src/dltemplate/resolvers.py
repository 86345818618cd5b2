"""OmegaConf resolvers the configs use: run directory labels and the sweep a run belongs to.

${dltemplate.run_label:${hydra.overrides.task}}   "_lr=0.01_hidden=64,64" from the command line's overrides
${dltemplate.sweep_group:}                         the sweep directory's name in a multirun, else null
${dltemplate.basename:${paths.output_dir}}         the last part of a path
${device_count:${trainer.devices}}                 a device setting as a count (the SLURM launcher)
${mixed_precision:}                                bf16-mixed where the GPU supports it, else 16-mixed
"""

from collections.abc import Sequence
from pathlib import PurePath

from omegaconf import OmegaConf

# overrides that say where a run reads or writes, not what it is
_UNLABELLED = ("task", "paths.", "hydra", "ckpt_path", "logger", "callbacks", "debug", "experiment", "hparams_search")


def run_label(overrides: Sequence[str] | None, prefix: str = "_", max_chars: int = 60) -> str:
    """A short label of what a run's command line changes, for its directory (and so TensorBoard) name.

    `module.optimizer.lr=0.01 net.hidden=[64,64]` gives `_lr=0.01_hidden=64,64`: each key's last part,
    values without brackets, quotes or paths. Empty when nothing but the task and paths is overridden.
    """
    parts = []
    for override in overrides or []:
        key, _, value = str(override).lstrip("+~").partition("=")
        if not value or key.startswith(_UNLABELLED):
            continue
        value = "".join(c for c in value if c not in "[]{}()'\" ")
        value = ",".join(_short(v) for v in value.split(","))
        parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    label = "_".join(parts)[:max_chars]
    return f"{prefix}{label}" if label else ""


def _short(value: str) -> str:
    """A path's file name; a long decimal number to 3 significant digits (Optuna's 0.0012345678 → 0.00123)."""
    if "/" in value:
        return PurePath(value).name
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.3g}" if len(value) > 6 and "." in value else value


def sweep_group() -> str | None:
    """`sweep_<sweep directory name>` inside a Hydra multirun job, else None (a single run)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return f"sweep_{PurePath(HydraConfig.get().sweep.dir).name}"


def _device_count(devices: object) -> int:
    """`${device_count:${trainer.devices}}`: a device setting as a count, for launchers that must ask for one."""
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    if isinstance(devices, str) and devices.replace(",", "").strip().isdigit():
        return len([d for d in devices.split(",") if d.strip()]) if "," in devices else int(devices)
    raise ValueError(
        f"trainer.devices={devices!r} is not a count; a launcher that reserves devices (hydra/launcher=slurm) "
        "needs one: pass trainer.devices=<GPUs per node>"
    )


def _mixed_precision() -> str:
    """`${mixed_precision:}`: "bf16-mixed" where the GPU computes in bfloat16 (Ampere and newer), else "16-mixed"."""
    import torch

    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"


def register() -> None:
    OmegaConf.register_new_resolver("dltemplate.run_label", run_label, replace=True)
    OmegaConf.register_new_resolver("dltemplate.basename", lambda path: PurePath(str(path)).name, replace=True)
    OmegaConf.register_new_resolver("dltemplate.sweep_group", sweep_group, replace=True)
    OmegaConf.register_new_resolver("device_count", _device_count, replace=True)
    OmegaConf.register_new_resolver("mixed_precision", _mixed_precision, replace=True)
