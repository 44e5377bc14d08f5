"""What a run's ``precision`` setting means on this machine (torch is imported only when
it is asked).

Kept apart from :mod:`training.sft` so that a config's identity
(:meth:`training.sft_config.SFTRunConfig.identity_data`) can resolve it without loading
the trainer."""

from generation.engine import cpu_has_native_bf16


def resolve_precision(precision: str, strict: bool = True) -> str:
    """What ``precision`` means here: ``bf16`` (GPU weights), ``bf16-autocast`` (CPU,
    fp32 weights under ``torch.autocast``) or ``fp32``.

    ``strict`` refuses an explicit ``bf16`` that this CPU would only emulate (training
    asks for that); hashing a config does not, since the config may be meant elsewhere.
    """
    import torch

    gpu = torch.cuda.is_available()
    if precision == "fp32":
        return "fp32"
    if gpu:
        return "bf16"
    if precision == "bf16":
        if cpu_has_native_bf16() or not strict:
            return "bf16-autocast"
        raise ValueError("precision bf16 on this CPU would be emulated (no AVX512-BF16 or AMX), "
                         "slower than fp32; train on a CPU with native bf16, or use precision "
                         "auto or fp32 (runs of another precision are other runs: finished "
                         "bf16 runs are not reused by them)")
    return "bf16-autocast" if cpu_has_native_bf16() else "fp32"
