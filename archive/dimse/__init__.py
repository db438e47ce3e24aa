"""The DICOM node (PS3.7, via pynetdicom): the listener, known peers and status codes; the SCPs land here."""
