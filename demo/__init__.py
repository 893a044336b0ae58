"""`gdrec-demo`: the product's main job on one machine. The data owner and the model consumer run as two processes on
loopback, driven only through their command lines (`gdrec-owner`, `gdrec-consumer`) and their HTTP APIs; this
package imports neither service (import-linter contract in pyproject.toml), only `shared`."""
