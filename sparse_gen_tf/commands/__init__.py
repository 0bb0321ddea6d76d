"""The command-line programs: `train`, `explain`, `evaluate`, `export` and `fit_encoder`,
each a thin absl front end over the library below it, and `cli`, their shared flag
handling. Nothing in the package imports from here."""
