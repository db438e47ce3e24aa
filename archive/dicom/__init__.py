"""Pure DICOM: UIDs, transfer syntaxes, Part 10 reading, DICOM JSON, frames, pixels. No Django here."""
