"""The part of a kernel's environment that a run's result depends on, and nothing else.

Environment capture is an allow-list of explicit names: a variable is recorded only when its
name is listed here, so a new `*_TOKEN` or a scheduler variable holding a secret never reaches
the store. Every recorded value still goes through `redaction` (by name and by shape) and is
cut to `MAX_VALUE_CHARS`, because even an allowed name can be set to a credential by mistake.
"""

from __future__ import annotations

import platform
import re
import sys
from collections.abc import Mapping

from jupyter_prov4ml.redaction import REDACTED, is_secret_name, redact_value

# Device lists: which GPUs the process sees, in which order.
DEVICE_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
)
CUDA_VARIABLES = (
    *DEVICE_VARIABLES,
    "CUDA_DEVICE_ORDER",
    "CUDA_HOME",
    "CUDA_PATH",
    "CUDA_LAUNCH_BLOCKING",
    "CUBLAS_WORKSPACE_CONFIG",
)
# Batch schedulers: the job a notebook ran in, to find its log and allocation later.
JOB_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_JOB_NAME",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_PARTITION",
    "SLURM_NODELIST",
    "SLURM_JOB_NODELIST",
    "SLURM_NTASKS",
    "SLURM_CPUS_PER_TASK",
    "SLURM_JOB_GPUS",
    "PBS_JOBID",
    "LSB_JOBID",
)
# Thread pools of the numeric libraries; they change speed and, for reductions, results.
# (There is no TORCH_NUM_THREADS: PyTorch reads OMP_NUM_THREADS and MKL_NUM_THREADS.)
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
REPRODUCIBILITY_VARIABLES = ("PYTHONHASHSEED", "TF_DETERMINISTIC_OPS", "TF_CUDNN_DETERMINISTIC")
CAPTURED_VARIABLES = (
    *CUDA_VARIABLES,
    *JOB_VARIABLES,
    *THREAD_VARIABLES,
    *REPRODUCIBILITY_VARIABLES,
)
MAX_VALUE_CHARS = 256
# `0,1`, `GPU-<uuid>`, `MIG-<uuid>`, `MIG-GPU-<uuid>/1/0`, `all`, `none`, `void`, or empty.
_UUID = r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"
_DEVICE_ITEM = rf"(?:-?\d+|all|none|void|(?:GPU|MIG|MIG-GPU)-{_UUID}(?:/\d+/\d+)?)"
_DEVICE_LIST = re.compile(rf"(?:{_DEVICE_ITEM}(?:,{_DEVICE_ITEM})*)?")


def captured_environment(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The Python interpreter's facts and the allow-listed variables set in `environ`, as
    (name, value) pairs with credential-like values replaced by `<redacted>`."""
    found = [
        ("python_version", platform.python_version()),
        ("python_implementation", platform.python_implementation()),
        ("python_executable", sys.executable or ""),
    ]
    found += [(name, environ[name]) for name in CAPTURED_VARIABLES if name in environ]
    return tuple((name, safe_value(name, value)) for name, value in found)


def safe_value(name: str, value: str) -> str:
    """`value` as it may be stored under `name`: redacted if it or its name looks like a
    credential, and at most `MAX_VALUE_CHARS` long."""
    if name in DEVICE_VARIABLES and _DEVICE_LIST.fullmatch(value.strip()):
        # GPU UUIDs are random-looking hex; the shape check would hide every one of them.
        stored: object = REDACTED if is_secret_name(name) else value
    else:
        stored = redact_value(name, value)
    text = str(stored)
    if len(text) > MAX_VALUE_CHARS:
        # A cut value keeps its head (e.g. a long node list) and says it was cut.
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    return text
