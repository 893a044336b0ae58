"""The data owner: holds raw interactions, trains the CGAN and the teacher, exports only what may cross."""
