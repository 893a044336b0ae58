"""`python -m model_consumer.cli`: the same command line as `gdrec-consumer`."""

from model_consumer.cli import main

main()
