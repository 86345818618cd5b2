"""PyTorch Lightning + Hydra template: five task families, one generic training loop."""

from omegaconf import OmegaConf


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


OmegaConf.register_new_resolver("device_count", _device_count, replace=True)
OmegaConf.register_new_resolver("mixed_precision", _mixed_precision, replace=True)
