"""Media: reference images fitted to what the API takes (and, beside them, checks of the videos made)."""
