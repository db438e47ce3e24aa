"""Plain DICOM in and out of the archive: the exit path (``export_dicom``) and its way back in (``import_dicom``).

A hospital's contract demands that its data can leave at any time, as plain
DICOM any other system reads: :mod:`.export` writes studies as Part 10 files
with a DICOMDIR, byte for byte as they were stored; :mod:`.folder` stores a
folder of Part 10 files (such an export, a CD, another archive's dump)
through the one ingest path.
"""
