"""NIfTI and DICOM files open with nacsim's reader without asking.

napari's built-in reader also claims ``*.nii`` / ``*.nii.gz`` (through imageio) but cannot
read them, so *File → Open* asked every time which reader to use. It claims ``*.dcm`` too,
where it reads one slice as a picture: not a series with its geometry, not a SEG as labels,
not an SR's measurements. napari remembers a choice per file pattern
(``settings.plugins.extension2reader``, the same setting its "remember" check box writes); as
soon as any part of nacsim runs (the widgets, the sample data), nacsim records itself for
these patterns — but never over a choice the user made.
"""

from __future__ import annotations

NIFTI_PATTERNS = ("*.nii", "*.nii.gz")
DICOM_PATTERNS = ("*.dcm",)
PATTERNS = NIFTI_PATTERNS + DICOM_PATTERNS
PLUGIN = "nacsim"


def remember_our_reader() -> list[str]:
    """Make nacsim napari's reader for NIfTI and DICOM files where the user chose nothing
    else; returns the patterns set now."""
    try:
        from napari.settings import get_settings

        settings = get_settings().plugins
    except Exception:  # noqa: BLE001 - no napari settings (a script): nothing to remember
        return []
    current = dict(settings.extension2reader)
    added = [p for p in PATTERNS if p not in current]
    if added:
        settings.extension2reader = {**current, **{p: PLUGIN for p in added}}
    return added


if __name__ == "__main__":
    # Run once when nacsim is installed (scripts/setup.sh): napari's reader choice for NIfTI
    # and DICOM files is made before any nacsim code runs in napari (a .nii opened first, in
    # a fresh napari, would otherwise ask which reader to use). Never over the user's own
    # choice.
    added = remember_our_reader()
    if added:
        print(f"napari: nacsim reads {', '.join(added)} (File → Open, no reader choice)")
