"""Query matching (PS3.4 C.2.2.2) shared by QIDO-RS and C-FIND: keys into database filters."""
