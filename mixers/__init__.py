"""mixforge.mixers: mixture sampling, predictors and search strategies (see mixers/search.py for the entry point)."""
