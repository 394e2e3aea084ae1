"""What a model and its data are worth: evaluate (accuracy per label), report (report.html,
figures, TensorBoard) and doctor (the data check, its statistics apart)."""
