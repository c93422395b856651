"""The store: journal (the truth), record codec, series files, index (derived), writer, recovery.

Everything read from a store is untrusted input."""
