"""Cohort manifests: which scans, masks and clinical values belong to which patient.

The format is documented in ``docs/cohort-manifest.md``. Paths inside a manifest are
relative to the manifest's folder (absolute paths are allowed too).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from .atomic import write_json_atomic
from .errors import InputError
from .scan import Scan, check_image_values, require_same_grid
from .scan_io import read_scan
from .schema import FamilySchema, family_schema

FORMAT = "nacsim-cohort"
VERSION = 1


@dataclasses.dataclass
class Patient:
    id: str
    clinical: dict[str, Any]
    scans: dict[str, dict[str, Path]]   # time point -> channel -> file
    masks: dict[str, dict[str, Path]]   # time point -> mask name -> file
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def scan_path(self, timepoint: str, channel: str) -> Path:
        try:
            return self.scans[timepoint][channel]
        except KeyError:
            raise InputError(f"patient {self.id}", f"has no {channel!r} scan at {timepoint}") from None

    def mask_path(self, timepoint: str, mask: str = "tumour") -> Path | None:
        return self.masks.get(timepoint, {}).get(mask)


@dataclasses.dataclass
class Cohort:
    family: FamilySchema
    patients: list[Patient]
    root: Path
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def patient(self, patient_id: str) -> Patient:
        for p in self.patients:
            if p.id == patient_id:
                return p
        raise InputError("patient", f"{patient_id!r} is not in this cohort")

    def to_json(self) -> dict[str, Any]:
        def rel(path: Path) -> str:
            try:
                return Path(os.path.relpath(path, self.root)).as_posix()
            except ValueError:  # other drive on Windows
                return str(path)

        return {
            "format": FORMAT,
            "version": VERSION,
            "family": self.family.name,
            "schema_version": self.family.version,
            **self.meta,
            "patients": [
                {
                    "id": p.id,
                    "clinical": p.clinical,
                    "scans": {t: {c: rel(f) for c, f in ch.items()} for t, ch in p.scans.items()},
                    "masks": {t: {m: rel(f) for m, f in ms.items()} for t, ms in p.masks.items()},
                    **({"extra": p.extra} if p.extra else {}),
                }
                for p in self.patients
            ],
        }

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_json())


def load_cohort(path: str | os.PathLike, check_files: bool = True) -> Cohort:
    """Read and validate a manifest; raises `InputError` naming the field or file at fault.

    With ``check_files`` every referenced file must exist (reading them is
    `check_cohort_images`'s job, which is slower).
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "cohort manifest does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"cohort manifest is not valid JSON ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, f"not a nacsim cohort manifest (expected \"format\": \"{FORMAT}\")")
    if payload.get("version") != VERSION:
        raise InputError(path, f"manifest version {payload.get('version')!r} is not supported "
                               f"(this nacsim reads version {VERSION})")
    schema = family_schema(str(payload.get("family")))
    patients_raw = payload.get("patients")
    if not isinstance(patients_raw, list) or not patients_raw:
        raise InputError(path, "manifest lists no patients")
    root = path.parent
    patients, seen = [], set()
    for i, raw in enumerate(patients_raw):
        patient = _parse_patient(raw, i, schema, root, path, check_files)
        if patient.id in seen:
            raise InputError(path, f"patient id {patient.id!r} appears twice")
        seen.add(patient.id)
        patients.append(patient)
    meta = {k: v for k, v in payload.items()
            if k not in ("format", "version", "family", "schema_version", "patients")}
    return Cohort(family=schema, patients=patients, root=root, meta=meta)


def _parse_patient(raw: Any, index: int, schema: FamilySchema, root: Path, manifest: Path,
                   check_files: bool) -> Patient:
    if not isinstance(raw, dict):
        raise InputError(manifest, f"patient #{index + 1} is not a JSON object")
    pid = raw.get("id")
    if not isinstance(pid, str) or not pid.strip():
        raise InputError(manifest, f"patient #{index + 1} has no \"id\"")
    subject = f"{manifest.name}: patient {pid}"
    clinical = schema.validate_clinical(raw.get("clinical") or {}, subject)

    def files(section: str, allowed: tuple[str, ...]) -> dict[str, dict[str, Path]]:
        table = raw.get(section) or {}
        if not isinstance(table, dict):
            raise InputError(subject, f"\"{section}\" must map time points to files")
        out: dict[str, dict[str, Path]] = {}
        for tp, entries in table.items():
            if tp not in schema.timepoint_names:
                raise InputError(subject, f"unknown time point {tp!r} in \"{section}\" "
                                          f"(known: {', '.join(schema.timepoint_names)})")
            if not isinstance(entries, dict):
                raise InputError(subject, f"\"{section}\".{tp} must map names to files")
            for name, rel in entries.items():
                if name not in allowed:
                    raise InputError(subject, f"unknown {section[:-1]} {name!r} at {tp} "
                                              f"(known: {', '.join(allowed)})")
                file = (root / str(rel)) if not Path(str(rel)).is_absolute() else Path(str(rel))
                if check_files and not file.exists():
                    raise InputError(file, f"listed for patient {pid} ({tp} {name}) but missing")
                out.setdefault(tp, {})[name] = file
        return out

    scans = files("scans", schema.channels)
    masks = files("masks", schema.masks)
    missing = [c for c in schema.channels if c not in scans.get(schema.baseline, {})]
    if missing:
        raise InputError(subject, f"baseline {schema.baseline} lacks the {missing[0]!r} scan")
    for mask, why in schema.baseline_masks:
        if mask not in masks.get(schema.baseline, {}):
            raise InputError(subject, f"\"masks\".{schema.baseline}.{mask} is missing ({why})")
    extra = raw.get("extra") or {}
    return Patient(id=pid, clinical=clinical, scans=scans, masks=masks, extra=extra)


def load_timepoint(patient: Patient, timepoint: str, schema: FamilySchema) -> dict[str, Scan]:
    """Read all channels and masks of one time point and check they share one grid."""
    scans: dict[str, Scan] = {}
    for channel in schema.channels:
        scan = read_scan(patient.scan_path(timepoint, channel))
        check_image_values(scan)
        scans[channel] = scan
    for mask, file in patient.masks.get(timepoint, {}).items():
        scans[mask] = read_scan(file, kind="labels")
    first = scans[schema.channels[0]]
    for name, scan in scans.items():
        require_same_grid(first, scan, f"patient {patient.id} {timepoint}")
    return scans


def check_cohort_images(cohort: Cohort) -> None:
    """Read every scan and mask; raise on the first unreadable or inconsistent one."""
    for patient in cohort.patients:
        for timepoint in patient.scans:
            load_timepoint(patient, timepoint, cohort.family)
