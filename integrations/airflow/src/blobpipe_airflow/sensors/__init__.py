"""blobpipe provider: sensors."""
