"""SMART on FHIR: the EHR launch into the viewer (App Launch) and EHR-issued access tokens for DICOMweb and FHIR."""
