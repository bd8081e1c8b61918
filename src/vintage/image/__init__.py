"""OCI images of a model: the lean scoring server and the materialised model on a Debian base."""
