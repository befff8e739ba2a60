"""The live side: connections, discovery of each pair's primary, and batched catalog reads."""
