"""mixforge.mixers: mixture sampling, predictors and search strategies (lands with the search issue)."""
