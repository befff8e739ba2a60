"""TLS for pairs, their clients and the API: the workspace's certificate authority, the certificates it issues,
and the revocation list the servers load."""
