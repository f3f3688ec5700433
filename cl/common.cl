// PLACEHOLDER: shared helpers.
