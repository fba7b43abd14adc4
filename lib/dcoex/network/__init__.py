"""Stage 03/03b science: edge classes, network topology, focus-gene neighbourhood, files."""
