"""Cohort manifests: which scans, masks and clinical values belong to which patient.

The format is documented in ``docs/cohort-manifest.md``. Paths inside a manifest are
relative to the manifest's folder (absolute paths are allowed too).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterator

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
    `check_cohort_images`'s job, which is slower). Holds every patient: a cohort run over a
    large manifest reads it as a `CohortManifest` instead.
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "cohort manifest does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"cohort manifest is not valid JSON ({err})") from None
    if not isinstance(payload, dict):
        raise InputError(path, NOT_A_MANIFEST)
    schema, meta = _check_header(payload, path)
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
    return Cohort(family=schema, patients=patients, root=root, meta=meta)


NOT_A_MANIFEST = f"not a nacsim cohort manifest (expected \"format\": \"{FORMAT}\")"


def _check_header(payload: dict[str, Any], path: Path) -> tuple[FamilySchema, dict[str, Any]]:
    """The manifest's family schema and its other top-level fields (``meta``)."""
    if payload.get("format") != FORMAT:
        raise InputError(path, NOT_A_MANIFEST)
    if payload.get("version") != VERSION:
        raise InputError(path, f"manifest version {payload.get('version')!r} is not supported "
                               f"(this nacsim reads version {VERSION})")
    schema = family_schema(str(payload.get("family")))
    meta = {k: v for k, v in payload.items()
            if k not in ("format", "version", "family", "schema_version", "patients")}
    return schema, meta


class CohortManifest:
    """A manifest read as a stream (`ijson`): its patients are parsed one at a time each
    time `patients` is iterated, so that a cohort run over a 100,000-patient manifest never
    holds them all (`load_cohort` does). Validated on construction, as `load_cohort` does
    (the same one-line errors); that pass keeps only the count, the patients with a
    follow-up scan and, while it runs, the ids seen (duplicates). A manifest changed after
    that is refused when next iterated (its patients would no longer be those counted)."""

    def __init__(self, path: str | os.PathLike, check_files: bool = True):
        self.path = Path(path)
        self.root = self.path.parent
        self._stamp = self._file_stamp()
        self.family, self.meta = _check_header(self._read_header(), self.path)
        self.count = self.with_followup = 0
        seen: set[str] = set()
        for patient in self._parse(check_files):
            if patient.id in seen:
                raise InputError(self.path, f"patient id {patient.id!r} appears twice")
            seen.add(patient.id)
            self.count += 1
            self.with_followup += any(tp != self.family.baseline for tp in patient.scans)
        if not self.count:
            raise InputError(self.path, "manifest lists no patients")

    @property
    def patients(self) -> "ManifestPatients":
        """The patients, in manifest order, parsed as they are iterated (has a length)."""
        return ManifestPatients(self)

    def _file_stamp(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise InputError(self.path, "cohort manifest does not exist") from None
        except OSError as err:
            raise InputError(self.path, f"cohort manifest cannot be read ({err})") from None
        return st.st_size, st.st_mtime_ns

    def _read_header(self) -> dict[str, Any]:
        """The top-level fields other than ``patients`` (whose events are passed over)."""
        ijson = _ijson()
        header: dict[str, Any] = {}
        key, builder, started = None, None, False
        with self._open() as fh:
            for prefix, event, value in self._json_errors(_events(fh)):
                if prefix == "" and event in ("map_key", "end_map"):
                    if builder is not None:
                        header[key], builder = builder.value, None
                    key = value
                elif prefix == "" and event == "start_map" and not started:
                    started = True
                elif prefix == "":  # the manifest is not a JSON object
                    raise InputError(self.path, NOT_A_MANIFEST)
                elif key != "patients":
                    if builder is None:
                        builder = ijson.ObjectBuilder()
                    builder.event(event, value)
        return header

    def _parse(self, check_files: bool) -> Iterator[Patient]:
        with self._open() as fh:
            items = _ijson().items(_events(fh), "patients.item")
            for i, raw in enumerate(self._json_errors(items)):
                yield _parse_patient(raw, i, self.family, self.root, self.path, check_files)

    def _open(self):
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            raise InputError(self.path, "cohort manifest does not exist") from None
        except OSError as err:
            raise InputError(self.path, f"cohort manifest cannot be read ({err})") from None

    def _json_errors(self, items: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from items
        except (_ijson().JSONError, UnicodeDecodeError) as err:
            # yajl's message spans lines (the text and a caret under it): one line here
            raise InputError(self.path, "cohort manifest is not valid JSON "
                                        f"({' '.join(str(err).split())})") from None

    def iter_patients(self) -> Iterator[Patient]:
        """The patients in manifest order (files checked on construction, not again)."""
        if self._file_stamp() != self._stamp:
            raise InputError(self.path, "changed since it was read (a run plans from the "
                                        "manifest as it was: start it again)")
        yield from self._parse(check_files=False)


def _ijson():
    """ijson, imported where a manifest is streamed (`load_cohort` needs only json)."""
    import ijson

    return ijson


def _events(fh) -> Iterator[tuple[str, str, Any]]:
    # floats as json.loads gives them (not Decimal): the same clinical values, the same
    # request hashes as a manifest read whole
    return _ijson().parse(fh, use_float=True)


class ManifestPatients:
    """`CohortManifest.patients`: re-iterable, with a length, never a list."""

    def __init__(self, manifest: CohortManifest):
        self.manifest = manifest

    def __len__(self) -> int:
        return self.manifest.count

    def __iter__(self) -> Iterator[Patient]:
        return self.manifest.iter_patients()


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
