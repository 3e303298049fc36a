"""morphcam's versioned wire protocol (``morphcam.protos.v1``) and its code generator."""
