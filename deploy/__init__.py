"""Deployment helpers: the gcloud commands of the Flex Templates (not shipped in the image)."""
