"""`python -m data_owner.cli`: the same command line as `gdrec-owner`."""

from data_owner.cli import main

main()
