"""The explanation (§2.2): parse graphs and basis functions of generated images, their
figures and dashboard, the scores that say whether the explanation is real, and the
reports of the `explain` and `evaluate` commands."""
