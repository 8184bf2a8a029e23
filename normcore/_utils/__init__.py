"""Private helpers shared by both halves: atomic writes, input errors, device choice, progress."""
