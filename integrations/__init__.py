"""Integrations with the systems around the PACS: EHR launch today; IHE IID, SMART and FHIR R4 next."""
