"""blobpipe provider: operators."""
