"""The vendor-neutral archive: DICOM parsing, the index, storage, and DICOMweb."""
