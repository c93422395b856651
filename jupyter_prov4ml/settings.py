"""Every `JUPYTER_PROV4ML_*` variable, parsed in one place.

`Settings.from_environ` reads them once, when the extension loads (or a CLI command starts);
a value that cannot be used is reported through `warn` and its default kept, so a typo in an
environment variable never stops recording.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

STORE_ENV = "JUPYTER_PROV4ML_STORE"
STORE_MODE_ENV = "JUPYTER_PROV4ML_STORE_MODE"
DEFAULT_DIRNAME = "prov4ml"


@dataclass(frozen=True, slots=True)
class StoreModes:
    """Permission bits of what the store creates: the user's only, unless configured."""

    directory: int = 0o700
    file: int = 0o600

    @property
    def private(self) -> bool:
        return self == PRIVATE


PRIVATE = StoreModes()


def resolve_store_modes(environ: Mapping[str, str]) -> StoreModes:
    """`$JUPYTER_PROV4ML_STORE_MODE` (a folder mode in octal, e.g. `750` to let the group
    read the store, `770` to let it write; files get the same bits without execute), else
    private. Raises ValueError for a value that is not such a mode."""
    text = environ.get(STORE_MODE_ENV, "").strip()
    if not text:
        return PRIVATE
    try:
        bits = int(text, 8)
    except ValueError:
        raise ValueError(f"{STORE_MODE_ENV}={text!r} is not an octal mode such as 750") from None
    if not 0 <= bits <= 0o777 or bits & 0o700 != 0o700:
        raise ValueError(f"{STORE_MODE_ENV}={text!r}: the owner needs rwx (7xx), e.g. 750")
    return StoreModes(bits, bits & 0o666)


def resolve_store_root(environ: Mapping[str, str], cwd: Path) -> Path:
    """`$JUPYTER_PROV4ML_STORE`, else `prov4ml/` in the kernel's working directory."""
    configured = environ.get(STORE_ENV)
    root = Path(configured).expanduser() if configured else cwd / DEFAULT_DIRNAME
    return root if root.is_absolute() else (cwd / root)


# Green Algorithms (Lannelongue, Grealey & Inouye, "Green Algorithms: Quantifying the Carbon
# Footprint of Computation", Adv. Sci. 2021, 2100707) use the CPU's TDP divided by its cores;
# their default for an unknown CPU ("Any") is 12 W per core.
DEFAULT_WATTS_PER_CORE = 12.0
CPU_WATTS_PER_CORE_ENV = "JUPYTER_PROV4ML_CPU_WATTS_PER_CORE"

# World average carbon intensity of electricity generation in 2023, 481 gCO2e/kWh (life-cycle
# emissions), from Ember's Global Electricity Review 2024 / Ember electricity data. Local grids
# range from ~30 (Norway) to ~700 (India); set the environment variable for yours.
DEFAULT_CARBON_INTENSITY_G_PER_KWH = 481.0
CARBON_INTENSITY_ENV = "JUPYTER_PROV4ML_CARBON_INTENSITY"


@dataclass(frozen=True, slots=True)
class EnergyConfig:
    """The two assumptions behind estimates: CPU power per core and grid carbon intensity."""

    watts_per_core: float = DEFAULT_WATTS_PER_CORE
    carbon_intensity_g_per_kwh: float = DEFAULT_CARBON_INTENSITY_G_PER_KWH

    def __post_init__(self) -> None:
        if not math.isfinite(self.watts_per_core) or self.watts_per_core <= 0:
            raise ValueError(
                f"CPU watts per core must be a finite number > 0, got {self.watts_per_core!r}"
            )
        intensity = self.carbon_intensity_g_per_kwh
        if not math.isfinite(intensity) or intensity < 0:
            raise ValueError(
                f"carbon intensity must be a finite number ≥ 0 gCO2e/kWh, got {intensity!r}"
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> EnergyConfig:
        """Defaults, overridden by JUPYTER_PROV4ML_CPU_WATTS_PER_CORE and
        JUPYTER_PROV4ML_CARBON_INTENSITY (an empty value counts as unset).

        Raises ValueError naming the variable when a value is not a usable number.
        """
        env = os.environ if environ is None else environ
        return cls(
            watts_per_core=_env_number(
                env, CPU_WATTS_PER_CORE_ENV, DEFAULT_WATTS_PER_CORE, "watts per core", positive=True
            ),
            carbon_intensity_g_per_kwh=_env_number(
                env,
                CARBON_INTENSITY_ENV,
                DEFAULT_CARBON_INTENSITY_G_PER_KWH,
                "gCO2e per kWh",
                positive=False,
            ),
        )


def _env_number(
    env: Mapping[str, str], name: str, default: float, unit: str, *, positive: bool
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    bound = "> 0" if positive else "≥ 0"
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number {bound} ({unit}), got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a number {bound} ({unit}), got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """What the environment configures: where the store is, its modes, the energy model."""

    store_root: Path
    store_modes: StoreModes = field(default_factory=StoreModes)
    energy: EnergyConfig = field(default_factory=EnergyConfig)

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        warn: Callable[[str, str], None] | None = None,
    ) -> Settings:
        """The settings `environ` asks for; `warn(key, message)` hears of each unusable value
        (its default is used instead)."""
        env = os.environ if environ is None else environ
        told = warn if warn is not None else (lambda key, message: None)
        try:
            modes = resolve_store_modes(env)
        except ValueError as error:
            told("store-mode", f"{error}; the store stays private (0700)")
            modes = PRIVATE
        try:
            energy = EnergyConfig.from_environ(env)
        except ValueError as error:
            told("energy-config", f"{error}; using the defaults")
            energy = EnergyConfig()
        return cls(resolve_store_root(env, cwd if cwd is not None else Path.cwd()), modes, energy)
