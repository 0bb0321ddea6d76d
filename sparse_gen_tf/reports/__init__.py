"""What the `explain` and `evaluate` commands write about a trained run: the explanation
report and its dashboard (report.py, the dashboard/ package), and the evaluation of the scores
(evaluation.py). They open runs and exported models, so they sit above training and
serving; the explanation itself (parse graphs, basis functions, scores) stays below."""
