"""The explanation (§2.2): parse graphs and basis functions of generated images, their
figures, and the scores that say whether the explanation is real."""
