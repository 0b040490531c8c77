"""blobpipe provider: triggers."""
