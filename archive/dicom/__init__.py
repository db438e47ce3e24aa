"""archive.dicom."""
