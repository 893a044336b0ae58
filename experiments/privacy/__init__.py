"""The privacy-utility report of `gdrec-privacy` (ALGORITHMS.md section 5): the privacy settings and row keys
(`settings`), the GD chain run per (setting, seed) (`sweep`), the means over seeds and the leakage-target check
(`summary`), and privacy.md / privacy.png (`render`). The command line is experiments.privacy_report."""
