"""FHIR R4, read-only: what imaging a patient has, for an EHR (``/fhir/``).

``ImagingStudy`` (search and read, each with its series and instances and an
``Endpoint`` to our DICOMweb root), ``Patient`` (minimal, from DICOM),
``Endpoint`` and the ``metadata`` CapabilityStatement, in JSON. The index
answers, through the one access policy (:mod:`archive.access`), with the same
bearer tokens and sessions as DICOMweb; every search and read is audited.
See ``docs/fhir.md``.
"""
