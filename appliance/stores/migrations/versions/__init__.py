"""One file per revision, a branch per store."""
