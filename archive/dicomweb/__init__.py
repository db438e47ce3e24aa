"""The DICOMweb API (PS3.18): STOW-RS, QIDO-RS, WADO-RS and rendered resources, and their one HTTP kit."""
