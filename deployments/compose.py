"""Moved to sfsr/faces/compose.py, so that jobs/generate.py (on this package's floor, which may
not import it) pastes back the same way; the ingress still imports these names from here."""

from sfsr.faces.compose import aligned_face, face_mask, fit_output, paste_back

__all__ = ["aligned_face", "face_mask", "fit_output", "paste_back"]
