"""blobpipe provider: hooks."""
