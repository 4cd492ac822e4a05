"""What an output folder of ``projkd reproduce`` was made with, checked before
anything trains.

``settings.json`` holds the settings the results depend on (compared on
every call: a folder never mixes runs of other settings), the frozen
``--epochs auto`` plan, and the runs asked for so far (``variants`` and
``seeds``). A call whose ``--variants`` and ``--seeds`` would leave out runs
that the folder (or a state resumed into it) holds or was asked for is
refused, naming them: the report never drops a run silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...models import list_models
from ..io import read_json, save_json
from .variants import VARIANTS

__all__ = [
    "check_request",
    "check_settings",
    "check_variants",
    "parse_pair",
    "read_settings",
    "record_request",
    "run_names",
    "saved_plan",
]


def parse_pair(pair: str) -> tuple[str, str]:
    """The teacher and student of ``"TEACHER:STUDENT"``, both known models."""
    teacher, sep, student = pair.partition(":")
    if not sep or not teacher or not student:
        raise InputError(
            f"pair={pair!r} is not TEACHER:STUDENT; e.g. 'wrn_40_2:wrn_16_2'."
        )
    known = list_models()
    for role, name in (("teacher", teacher), ("student", student)):
        if name not in known and not name.startswith("torchvision:"):
            raise InputError(
                f"pair={pair!r}: the {role} {name!r} is not a projkd model; "
                f"choose from {', '.join(known)}."
            )
    return teacher, student


def check_variants(variants: Sequence[str]) -> list[str]:
    """``variants`` as a list, each known and named once."""
    variants = list(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise InputError(
            f"variants={variants!r}: unknown {unknown}; choose from "
            f"{', '.join(VARIANTS)}."
        )
    if len(set(variants)) != len(variants):
        raise InputError(f"variants={variants!r} lists a variant twice.")
    return variants


def read_settings(folder: Path, where: str | None = None) -> dict[str, Any] | None:
    """The ``settings.json`` of a run folder, or None when it has none.

    Parameters
    ----------
    folder : Path
    where : str or None, default=None
        How the message names the folder (e.g. the ``--resume-from`` state
        unpacked into a temporary folder); default its path.

    Raises
    ------
    InputError
        If the file is empty, truncated, not JSON or not a run's settings.
    """
    path = folder / "settings.json"
    if not path.exists():
        return None
    name = repr(str(path)) if where is None else f"settings.json in {where}"
    settings: dict[str, Any] = read_json(
        path, "the settings file", keys=("dataset",), name=name
    )
    return settings


def _named(folder: Path, where: str | None) -> str:
    """How a message starts with the folder: its name, capitalised."""
    shown = where or str(folder)
    return shown[:1].upper() + shown[1:]


def saved_plan(out: Path) -> dict[str, Any] | None:
    """The plan frozen in ``out``'s settings by an earlier call, if any."""
    return (read_settings(out) or {}).get("plan")


def check_settings(
    out: Path, settings: dict[str, Any], write: bool = True, where: str | None = None
) -> None:
    """Refuse to mix runs of other settings in one output folder.

    Parameters
    ----------
    out : Path
    settings : dict
        This call's; every key is compared with the folder's.
    write : bool, default=True
        Record them when the folder has none.
    where : str or None, default=None
        The folder's name in the message.
    """
    saved = read_settings(out, where)
    if saved is None:
        if write:
            save_json(out / "settings.json", settings)
        return
    differ = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if differ:
        details = "; ".join(
            f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items()
        )
        raise InputError(
            f"{_named(out, where)} holds runs made with other settings ({details}). "
            "Re-run with the same settings to resume, or choose another out "
            "folder."
        )


def run_names(variants: Sequence[str], seeds: int) -> list[str]:
    """The runs of ``variants`` and ``seeds``, as their folders are named.

    Examples
    --------
    >>> run_names(["alone", "kd"], 2)
    ['alone-seed0', 'kd-seed0', 'alone-seed1', 'kd-seed1']
    """
    return [f"{v}-seed{s}" for s in range(seeds) for v in variants]


def _parse(name: str) -> tuple[str, int] | None:
    """The variant and seed of a run's name (None: not a run's name)."""
    variant, _, seed = name.rpartition("-seed")
    if variant not in VARIANTS or not seed.isdigit():
        return None
    return variant, int(seed)


def _held(folder: Path) -> dict[str, str]:
    """The runs a folder holds: finished, or started (a checkpoint)."""
    runs = folder / "runs"
    held = {}
    for unit in sorted(runs.iterdir()) if runs.is_dir() else []:
        if _parse(unit.name) is None:
            continue
        if (unit / "record.json").is_file():
            held[unit.name] = "finished"
        elif (unit / "ckpt").is_dir():
            held[unit.name] = "started"
    return held


def check_request(
    folder: Path, variants: Sequence[str], seeds: int, where: str | None = None
) -> None:
    """Refuse a call that would leave out of its report runs of ``folder``.

    The runs ``folder`` holds (finished or started) and those its settings
    record as asked for must all be among this call's ``variants`` and
    ``seeds``; otherwise the refusal names each run left out and why (held
    in the folder, or asked for by an earlier call), and the flags that
    would include them.

    Parameters
    ----------
    folder : Path
        An output folder, or a state unpacked for ``--resume-from``.
    variants : sequence of str
    seeds : int
    where : str or None, default=None
        How the message names ``folder``; default its path.

    Raises
    ------
    InputError
        If a run would be left out.
    """
    asked = set(run_names(variants, seeds))
    saved = read_settings(folder, where) or {}
    recorded = run_names(saved.get("variants") or [], int(saved.get("seeds") or 0))
    held = _held(folder)
    left = {name: state for name, state in held.items() if name not in asked}
    left |= {n: "asked for" for n in recorded if n not in asked and n not in held}
    if not left:
        return
    runs = [run for run in map(_parse, [*held, *recorded]) if run is not None]
    named = set(variants) | {variant for variant, _ in runs}
    union = ",".join(v for v in VARIANTS if v in named)
    most = max([seeds, *(seed + 1 for _, seed in runs)])
    shown = ", ".join(f"{name} ({state})" for name, state in left.items())
    raise InputError(
        f"{_named(folder, where)} holds runs that --variants "
        f"{','.join(variants)} --seeds {seeds} would leave out of the report: "
        f"{shown}. Pass --variants {union} --seeds {most} to continue them and "
        "report them all, or choose another --out."
    )


def record_request(out: Path, variants: Sequence[str], seeds: int) -> None:
    """Record in ``out``'s settings the runs asked for (after
    :func:`check_request`: a superset of those recorded before)."""
    saved = read_settings(out)
    if saved is not None:
        request = {"variants": list(variants), "seeds": seeds}
        save_json(out / "settings.json", {**saved, **request})
