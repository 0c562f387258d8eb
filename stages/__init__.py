"""The pipeline's stages, one module each: prepare, build, deploy, probe, upload, train, fetch, terminate."""
